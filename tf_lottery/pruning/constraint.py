"""MaskConstraint: keeps pruned weights at exactly zero through every update.

tf_keras optimizers assign `variable.constraint(variable)` after each update, so a
weight whose constraint multiplies by its mask can never hold a non-zero pruned
value, whatever the optimizer (SGD, momentum, Adam) or weight decay did.

Under tf.distribute the weight is a MirroredVariable with aggregation NONE and the
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

Which weights of which layers carry a MaskConstraint, and what they are called,
is tf_lottery.pruning.prunable's business; this module only needs to find the
masks, so that θ0, θk and checkpoints can leave them out.
"""

from typing import List, Optional

import tensorflow as tf
import tf_keras as keras


def mask_name(attribute: str) -> str:
    """The mask variable's name beside the weight `attribute`: 'kernel' -> 'kernel_mask',
    the name masks have always had, so older checkpoints keep their variable names."""
    return f"{attribute}_mask"


class MaskConstraint(keras.constraints.Constraint):
    """Multiplies a weight by its mask; the mask is a non-trainable variable beside it.

    One instance usually guards one weight. MultiHeadAttention hands the single
    constraint it is given to its four projections, so an instance may guard
    several; each weight then has its own mask, found by the variable the
    optimizer passes in (the very object the layer created).
    """

    def __init__(self):
        self._guarded = []  # [(weight variable, mask variable)], in attachment order

    @property
    def mask(self) -> Optional[tf.Variable]:
        """The mask of the one weight this constraint guards (None before attach)."""
        if len(self._guarded) > 1:
            raise ValueError("this MaskConstraint guards several weights; use mask_for(weight)")
        return self._guarded[0][1] if self._guarded else None

    @property
    def masks(self) -> List[tf.Variable]:
        return [mask for _, mask in self._guarded]

    def mask_for(self, weight) -> Optional[tf.Variable]:
        return next((mask for guarded, mask in self._guarded if guarded is weight), None)

    def attach(self, owner: keras.layers.Layer, attribute: str = "kernel") -> tf.Variable:
        """Creates the all-ones mask of `owner.<attribute>` on `owner`; call under the strategy scope."""
        weight = getattr(owner, attribute)
        existing = self.mask_for(weight)
        if existing is not None:
            return existing
        # ONLY_FIRST_REPLICA: masks are written from host values in cross-replica
        # context, and every replica must hold the same mask.
        mask = owner.add_weight(
            name=mask_name(attribute), shape=weight.shape, dtype=weight.dtype, initializer="ones",
            trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        self._guarded.append((weight, mask))
        return mask

    def __call__(self, w):
        if not self._guarded:
            return w
        if len(self._guarded) == 1:
            mask = self._guarded[0][1]
        else:
            mask = self.mask_for(w)
            if mask is None:
                raise ValueError(f"MaskConstraint shared by {len(self._guarded)} weights was called on "
                                 f"{getattr(w, 'name', 'a tensor')}, none of them")
        return w * tf.cast(mask, w.dtype)

    def get_config(self):
        return {}


def without_masks(config: dict) -> dict:
    """A layer's get_config() with every MaskConstraint argument (kernel_constraint,
    recurrent_constraint, embeddings_constraint ...) set to None: the same layer unmasked."""
    return {
        key: None if key.endswith("_constraint") and isinstance(value, dict)
        and value.get("class_name") == MaskConstraint.__name__ else value
        for key, value in config.items()
    }


def walk_layers(model) -> List[keras.layers.Layer]:
    """Every leaf layer of a (possibly nested) model, in model order."""
    result = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            result.extend(walk_layers(layer))
        else:
            result.append(layer)
    return result


def mask_constraints(layer) -> List[MaskConstraint]:
    """Every MaskConstraint held by `layer` or a layer inside it (cells, sublayers), once each."""
    found = {}
    for module in (layer, *layer.submodules):
        for value in vars(module).values():
            if isinstance(value, MaskConstraint):
                found.setdefault(id(value), value)
    return list(found.values())


def mask_variables(model) -> List[tf.Variable]:
    return [mask for c in mask_constraints(model) for mask in c.masks]


def model_weights(model) -> List[tf.Variable]:
    """Every model variable except the masks, in model order: what θ0, θk and final weights hold."""
    masks = {id(v) for v in mask_variables(model)}
    return [v for v in model.weights if id(v) not in masks]
