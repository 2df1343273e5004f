"""Prunable layer constructors: ordinary tf_keras layers with a MaskConstraint."""

import tf_keras as keras

from tf_lottery.pruning.constraint import MaskConstraint


def masked_dense(units: int, name: str, activation=None, kernel_initializer="glorot_normal", **kwargs):
    """A Dense layer whose kernel is prunable. `name` is required: masks are keyed by it."""
    return keras.layers.Dense(
        units, activation=activation, kernel_initializer=kernel_initializer,
        kernel_constraint=MaskConstraint(), name=name, **kwargs,
    )


def masked_conv2d(filters: int, kernel_size, name: str, kernel_initializer="glorot_normal", **kwargs):
    """A Conv2D layer whose kernel is prunable. `name` is required: masks are keyed by it."""
    return keras.layers.Conv2D(
        filters, kernel_size, kernel_initializer=kernel_initializer,
        kernel_constraint=MaskConstraint(), name=name, **kwargs,
    )
