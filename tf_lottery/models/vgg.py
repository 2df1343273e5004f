"""The paper's VGG-19 for CIFAR-10: VGG-19's 16 convolutions with BatchNorm, average pool, one dense layer.

Stages of 2x64, 2x128, 4x256, 4x512 and 4x512 3x3 convolutions, a 2x2 max pool
between stages, then global average pooling and a dense output layer; He-normal
initialisation. On 32x32x3 inputs: 20,018,880 conv and 5,120 dense kernel weights.
"""

import tf_keras as keras

from tf_lottery.models import register
from tf_lottery.models.layers import masked_dense
from tf_lottery.models.resnet import conv_bn

VGG19_STAGES = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))


def cifar_vgg(input_shape, num_classes, stages=VGG19_STAGES, name: str = "vgg") -> keras.Model:
    """Conv-BatchNorm-ReLU stages of (filters, convolutions), max-pooled between stages."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for stage, (filters, convolutions) in enumerate(stages):
        if stage > 0:
            x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
        for i in range(convolutions):
            x = conv_bn(x, filters, 3, 1, f"stage{stage + 1}_conv{i + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = masked_dense(num_classes, name="output", kernel_initializer="he_normal")(x)
    return keras.Model(inputs, outputs, name=name)


@register("vgg19", augment=True, resolution_agnostic=True)
def vgg19(input_shape, num_classes):
    """The paper's VGG-19 with BatchNorm: 20,024,000 kernel weights on CIFAR-10."""
    return cifar_vgg(input_shape, num_classes, name="vgg19")
