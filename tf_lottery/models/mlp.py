"""Fully-connected networks: the paper's LeNet-300-100 and a small MLP for tests."""

from typing import Sequence

import tf_keras as keras

from tf_lottery.models import register
from tf_lottery.models.layers import masked_dense


def _mlp(input_shape, num_classes, hidden_units: Sequence[int], name: str) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden_units):
        x = masked_dense(units, name=f"fc{i + 1}", activation="relu")(x)
    outputs = masked_dense(num_classes, name="output")(x)
    return keras.Model(inputs, outputs, name=name)


@register("lenet300_100")
def lenet300_100(input_shape, num_classes):
    """784-300-100-10 with Glorot-normal initialisation (266,610 parameters on MNIST)."""
    return _mlp(input_shape, num_classes, (300, 100), "lenet300_100")


@register("mlp")
def mlp(input_shape, num_classes, hidden_units: Sequence[int] = (32,)):
    """A small configurable MLP (--hidden_units) for fast tests."""
    return _mlp(input_shape, num_classes, tuple(hidden_units) or (32,), "mlp")


@register("policy_mlp")
def policy_mlp(input_shape, num_classes, hidden_units: Sequence[int] = (64, 64)):
    """A policy for reinforcement learning (--dataset=gym:<id>): observation -> tanh layers (--hidden_units,
    default 64,64) -> action logits ('output'); CartPole-v1's 4-64-64-2 has 4,610 weights. tanh, the usual
    choice for policy-gradient MLPs in classic control, keeps the logits' scale bounded at initialisation."""
    inputs = keras.Input(shape=input_shape, name="observation")
    x = inputs
    for i, units in enumerate(tuple(hidden_units) or (64, 64)):
        x = masked_dense(units, name=f"fc{i + 1}", activation="tanh")(x)
    outputs = masked_dense(num_classes, name="output")(x)
    return keras.Model(inputs, outputs, name="policy_mlp")
