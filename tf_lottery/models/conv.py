"""The paper's Conv-2, Conv-4 and Conv-6 (VGG-like networks for CIFAR-10), with and without dropout.

Each has 1, 2 or 3 stages of two 3x3 convolutions (64, 128, 256 filters, 'same'
padding, ReLU) and a 2x2 max pool, then fully-connected layers of 256, 256 and
`num_classes` units, all Glorot-normal initialised. On 32x32x3 inputs their conv
and dense kernels hold 4,300,992 (38,592 conv), 2,425,024 (259,776 conv) and
2,261,184 (1,144,512 conv) weights.
"""

import random

import tensorflow as tf
import tf_keras as keras

from tf_lottery.models import register
from tf_lottery.models.layers import masked_conv2d, masked_dense

STAGE_FILTERS = (64, 128, 256)
FC_UNITS = (256, 256)
DROPOUT_RATE = 0.5


class SeededDropout(keras.layers.Layer):
    """Dropout whose noise at its t-th training call depends only on (seed, t).

    tf_keras's Dropout draws from a random state that no checkpoint holds, so a
    resumed run would drop other units than the uninterrupted run did. Here the
    call counter is an ordinary non-trainable weight: run checkpoints, θ0 and θk
    carry it, so resuming (or resetting to θk) replays the same noise.
    """

    def __init__(self, rate: float, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = int(seed)

    def build(self, input_shape):
        # ONLY_FIRST_REPLICA: one counter for all replicas, updated from replica context.
        self.calls = self.add_weight(
            name="calls", shape=(), dtype=tf.int64, initializer="zeros", trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        super().build(input_shape)

    def call(self, inputs, training=None):
        if training is None:
            training = keras.backend.learning_phase()

        def dropped():
            step = tf.identity(self.calls)
            self.calls.assign_add(1)
            context = tf.distribute.get_replica_context()
            replica = tf.cast(context.replica_id_in_sync_group if context else 0, tf.int64)
            # Replicas see different examples, so they get different noise too.
            seed = tf.stack([tf.constant(self.seed, tf.int64) + replica, step])
            return tf.nn.experimental.stateless_dropout(inputs, self.rate, seed)

        return tf.__internal__.smart_cond.smart_cond(training, dropped, lambda: tf.identity(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def _conv_net(input_shape, num_classes, stages: int, dropout: bool, name: str) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for stage, filters in enumerate(STAGE_FILTERS[:stages]):
        for i in range(2):
            x = masked_conv2d(filters, 3, name=f"conv{2 * stage + i + 1}", padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{stage + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(FC_UNITS):
        x = masked_dense(units, name=f"fc{i + 1}", activation="relu")(x)
        if dropout:
            # The seed comes from Python's random module, which build(seed=...) seeds.
            x = SeededDropout(DROPOUT_RATE, seed=random.randrange(2**31), name=f"dropout{i + 1}")(x)
    outputs = masked_dense(num_classes, name="output")(x)
    return keras.Model(inputs, outputs, name=name)


def _register_family(stages: int):
    @register(f"conv{2 * stages}")
    def plain(input_shape, num_classes):
        return _conv_net(input_shape, num_classes, stages, dropout=False, name=f"conv{2 * stages}")

    @register(f"conv{2 * stages}_dropout")
    def with_dropout(input_shape, num_classes):
        return _conv_net(input_shape, num_classes, stages, dropout=True, name=f"conv{2 * stages}_dropout")

    plain.__doc__ = f"Conv-{2 * stages}: {stages} conv stage(s), FC 256-256-classes, Glorot-normal."
    with_dropout.__doc__ = f"Conv-{2 * stages} with dropout {DROPOUT_RATE} after each hidden FC layer."


for _stages in (1, 2, 3):
    _register_family(_stages)


LENET5_FILTERS = (20, 50)
LENET5_UNITS = 500


@register("lenet5")
def lenet5(input_shape, num_classes):
    """Caffe's LeNet-5 for 28x28 digits, the convnet of the pruning literature (Han et al. 2015;
    Wen et al. 2016 remove its filters): 5x5 'valid' convolutions of 20 and 50 filters, each with
    ReLU and a 2x2 max pool, FC 500, `num_classes`; Glorot-normal. On 28x28x1 inputs its kernels
    hold 430,500 weights (25,500 conv)."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, filters in enumerate(LENET5_FILTERS):
        x = masked_conv2d(filters, 5, name=f"conv{i + 1}", padding="valid", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = masked_dense(LENET5_UNITS, name="fc1", activation="relu")(x)
    outputs = masked_dense(num_classes, name="output")(x)
    return keras.Model(inputs, outputs, name="lenet5")
