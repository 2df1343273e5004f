"""The paper's "Resnet-18": the CIFAR ResNet of He et al. with 16, 32 and 64 filters (often called ResNet-20).

A 3x3 convolution of 16 filters, then 3 stages of 3 residual blocks (two 3x3
convolutions each) with 16, 32 and 64 filters, the first block of stages 2 and 3
striding by 2 with a 1x1 convolution on its shortcut; BatchNorm after every
convolution, global average pooling and a dense output layer. He-normal
initialisation. On 32x32x3 inputs: 270,256 conv and 640 dense kernel weights;
with BatchNorm scales/offsets and the output bias, 272,474 trainable parameters.
"""

import tf_keras as keras

from tf_lottery.models import register
from tf_lottery.models.layers import masked_conv2d, masked_dense

STAGE_FILTERS = (16, 32, 64)
BLOCKS_PER_STAGE = 3
# PyTorch's BatchNorm defaults (momentum 0.1 there is 0.9 here), as in the reference implementations.
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5


def conv_bn(x, filters: int, kernel_size: int, strides: int, name: str, relu: bool = True):
    """Convolution (no bias: BatchNorm's offset replaces it), BatchNorm and optional ReLU."""
    x = masked_conv2d(filters, kernel_size, name=name, strides=strides, padding="same",
                      use_bias=False, kernel_initializer="he_normal")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _block(x, filters: int, strides: int, name: str):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, 1, strides, f"{name}_shortcut", relu=False)
    x = conv_bn(x, filters, 3, strides, f"{name}_conv1")
    x = conv_bn(x, filters, 3, 1, f"{name}_conv2", relu=False)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def cifar_resnet(input_shape, num_classes, stage_filters=STAGE_FILTERS, blocks=BLOCKS_PER_STAGE,
                 name: str = "resnet") -> keras.Model:
    """A CIFAR ResNet with `blocks` residual blocks in each stage of `stage_filters`."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = conv_bn(inputs, stage_filters[0], 3, 1, "conv_stem")
    for stage, filters in enumerate(stage_filters):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _block(x, filters, strides, f"stage{stage + 1}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = masked_dense(num_classes, name="output", kernel_initializer="he_normal")(x)
    return keras.Model(inputs, outputs, name=name)


@register("resnet18", augment=True, resolution_agnostic=True)
def resnet18(input_shape, num_classes):
    """The paper's Resnet-18 (16/32/64 filters, 3 blocks a stage): 270,896 kernel weights on CIFAR-10."""
    return cifar_resnet(input_shape, num_classes, name="resnet18")


@register("resnet20", augment=True, resolution_agnostic=True)
def resnet20(input_shape, num_classes):
    """The same network as resnet18, under the name most of the literature uses."""
    return cifar_resnet(input_shape, num_classes, name="resnet20")
