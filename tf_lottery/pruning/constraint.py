"""MaskConstraint: keeps pruned weights at exactly zero through every update.

tf_keras optimizers assign `variable.constraint(variable)` after each update, so a
kernel whose constraint multiplies by its mask can never hold a non-zero pruned
weight, whatever the optimizer (SGD, momentum, Adam) or weight decay did.

Under tf.distribute the kernel is a MirroredVariable with aggregation NONE and the
optimizer makes that assignment in replica context. TensorFlow 2 allows it: an
update of a NONE-aggregated mirrored variable in replica context writes that
replica's own copy (values._on_write_update_replica; on TPU a raw assign). Every
replica multiplies its copy, identical after the all-reduced update, by its copy
of the mask, identical because masks are only ever assigned from host values in
cross-replica context; a product with 0 or 1 is exact, so the copies stay
identical and pruned weights are exactly 0 on all of them. With mixed_float16 the
loss-scale optimizer applies the update, constraint included, in cross-replica
context instead, where the assignment reaches every copy. Both paths are tested
in tests/test_distribute.py, replica by replica.
"""

from typing import List

import tensorflow as tf
import tf_keras as keras

MASK_WEIGHT_NAME = "kernel_mask"


class MaskConstraint(keras.constraints.Constraint):
    """Multiplies a kernel by its mask; the mask is a non-trainable variable of the layer."""

    def __init__(self):
        self.mask = None

    def attach(self, layer: keras.layers.Layer):
        """Creates the layer's all-ones mask variable; call under the strategy scope."""
        if self.mask is not None:
            return
        # ONLY_FIRST_REPLICA: masks are written from host values in cross-replica
        # context, and every replica must hold the same mask.
        self.mask = layer.add_weight(
            name=MASK_WEIGHT_NAME,
            shape=layer.kernel.shape,
            dtype=layer.kernel.dtype,
            initializer="ones",
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    def __call__(self, w):
        if self.mask is None:
            return w
        return w * tf.cast(self.mask, w.dtype)

    def get_config(self):
        return {}


def walk_layers(model) -> List[keras.layers.Layer]:
    """Every leaf layer of a (possibly nested) model, in model order."""
    result = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            result.extend(walk_layers(layer))
        else:
            result.append(layer)
    return result


def prunable_layers(model) -> List[keras.layers.Layer]:
    """The layers whose kernels carry a MaskConstraint, in model order."""
    return [
        layer for layer in walk_layers(model)
        if isinstance(getattr(layer, "kernel_constraint", None), MaskConstraint)
    ]


def attach_masks(model):
    """Gives every prunable kernel of a built model its mask variable."""
    layers = prunable_layers(model)
    names = [layer.name for layer in layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"prunable layer names must be unique, repeated: {', '.join(duplicates)}")
    for layer in layers:
        layer.kernel_constraint.attach(layer)
    return model


def mask_variables(model) -> List[tf.Variable]:
    return [layer.kernel_constraint.mask for layer in prunable_layers(model)]


def model_weights(model) -> List[tf.Variable]:
    """Every model variable except the masks: what θ0, θk and final weights hold."""
    masks = {id(v) for v in mask_variables(model)}
    return [v for v in model.weights if id(v) not in masks]
