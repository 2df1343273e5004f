"""Learned supermasks (Zhou et al. 2019): frozen weights, one trained score per prunable weight.

`supermask_wrap()` is a loop.ModelWrap, so a learned supermask is an ordinary run of
`run.train` (checkpointed, resumable, metrics.csv). Its build step

  - freezes every layer of the masked model (`trainable = False`): the trainer's
    step, which trains `model.trainable_variables`, then trains only
  - the scores, one float32 variable per prunable weight, added to the masked model
    itself (so that the optimizer and the run's checkpoint hold them); weights files
    of the run list them after the model's own variables, as '<path>_score:0';
  - clones the model into a forward model in which every prunable layer reads its
    weight as w * m, m = Bernoulli(sigmoid(score)) drawn afresh at every call
    (training and evaluation alike, as the paper's code evaluates), times the run's
    mask (a supermask of the cell's mask), with the paper's straight-through
    estimator: m + sigmoid(s) - stop_gradient(sigmoid(s)), so dm/ds = sigmoid'(s).
    With `dynamic_scaling` each layer's masked weight is multiplied by its size over
    the number of sampled ones (the paper's, gradient through the count included).

The draws come from a tf.random.Generator that the forward model holds, so a
resumed run draws what the uninterrupted one drew; `threshold` switches the draws
to the deterministic mask sigmoid(s) > 0.5 for one evaluation.
"""

import collections
from typing import Dict, List, Mapping, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery.errors import UsageError
from tf_lottery.pruning import constraint, prunable, survivors
from tf_lottery.training.loop import ModelWrap

SCORE_SUFFIX = "_score"
WEIGHTS = ("init", "signed_constant")
_SCORES = "_tf_lottery_supermask_scores"  # {path: score variable} on the masked model (untracked)
_STATE = "_tf_lottery_supermask_state"  # the SupermaskState on the forward model (untracked)


def frozen_values(model, theta: List[np.ndarray], weights: str) -> Dict[int, np.ndarray]:
    """{id(variable): value} of every model weight but the scores: θ0 (values by position, as
    weights files hold them), the prunable weights α·sign(θ0) for weights=signed_constant (α the
    standard deviation of the weight's θ0 values; pruning.survivors' definition, reinit's too)."""
    score_ids = {id(v) for v in scores(model).values()}
    variables = [v for v in constraint.model_weights(model) if id(v) not in score_ids]
    if len(variables) != len(theta) or any(tuple(v.shape) != np.shape(t) for v, t in zip(variables, theta)):
        raise UsageError(f"the parent's θ0 does not fit model {model.name}: different variables or shapes")
    values = {id(v): np.asarray(t) for v, t in zip(variables, theta)}
    if weights == "signed_constant":
        kernels = {w.path: w.variable for w in prunable.prunable_weights(model)}
        initial = {path: values[id(v)] for path, v in kernels.items()}
        for path, value in survivors.signed_constant(initial, survivors.init_scales(initial)).items():
            values[id(kernels[path])] = value
    return values


def initial_values(model, theta: List[np.ndarray], weights: str, score: float) -> Tuple[List[str], List[np.ndarray]]:
    """(names, values) of a learned supermask run's initial weights file: the frozen weights and
    every score at `score`, in the model's variable order."""
    frozen = frozen_values(model, theta, weights)
    variables = constraint.model_weights(model)
    values = [frozen[id(v)] if id(v) in frozen else np.full(v.shape, score, np.float32) for v in variables]
    return [v.name for v in variables], values


def scores(model) -> Mapping[str, tf.Variable]:
    """{prunable weight path: its score variable} of a masked model a supermask wrap built on ({} otherwise)."""
    return getattr(model, _SCORES, {})


def state(forward) -> "SupermaskState":
    return getattr(forward, _STATE)


def mask_densities(model) -> Tuple[float, Dict[str, float]]:
    """The learned supermask's expected density (the mean of sigmoid(score) times the run's mask,
    the paper's '[Est] percent of 1s'): over all prunable weights, and per weight path."""
    kept, sizes = {}, {}
    for weight in prunable.prunable_weights(model):
        probability = 1.0 / (1.0 + np.exp(-scores(model)[weight.path].numpy().astype(np.float64)))
        kept[weight.path] = float(np.sum(probability * weight.mask.numpy()))
        sizes[weight.path] = weight.variable.shape.num_elements()
    return sum(kept.values()) / sum(sizes.values()), {p: kept[p] / sizes[p] for p in kept}


class SupermaskState(tf.Module):
    """What the forward model's draws depend on: the generator and the threshold switch."""

    def __init__(self):
        super().__init__(name="supermask_state")
        self.generator = tf.random.Generator.from_seed(0)
        self.threshold = tf.Variable(False, trainable=False, name="threshold")

    def reset(self, seed: int):
        self.generator.reset_from_seed(seed)
        self.threshold.assign(False)


class Supermasked(keras.layers.Layer):
    """A prunable layer of the masked model, called with its weights times a sampled supermask.

    The layer's own call() computes the output, with the masked weights put in place of
    its variables for the duration of the call (plain attribute writes, bypassing Keras's
    tracking, so its variables stay what the model owns and checkpoints).
    """

    def __init__(self, inner: keras.layers.Layer, slots, supermask_state: SupermaskState, dynamic_scaling: bool):
        super().__init__(name=f"supermask_{inner.name}", dtype=inner.dtype_policy, trainable=False)
        self.supermask_state = supermask_state  # tracked: the run's checkpoint holds the generator
        object.__setattr__(self, "_inner", inner)  # untracked: the masked model owns it
        object.__setattr__(self, "_slots", tuple(slots))  # (attribute, weight, run mask, score)
        self.dynamic_scaling = dynamic_scaling

    def _masked(self, weight, run_mask, score):
        probability = tf.sigmoid(tf.cast(score, tf.float32))
        drawn = tf.cast(self.supermask_state.generator.uniform(tf.shape(probability)) < probability, tf.float32)
        chosen = tf.where(self.supermask_state.threshold, tf.cast(probability > 0.5, tf.float32), drawn)
        mask = (chosen + probability - tf.stop_gradient(probability)) * tf.cast(run_mask, tf.float32)
        if self.dynamic_scaling:
            mask *= tf.cast(tf.size(mask), tf.float32) / tf.maximum(tf.reduce_sum(mask), 1.0)
        value = tf.convert_to_tensor(weight)
        return value * tf.cast(mask, value.dtype)

    def call(self, inputs):
        inner = self._inner
        try:
            for attribute, weight, run_mask, score in self._slots:
                object.__setattr__(inner, attribute, self._masked(weight, run_mask, score))
            return inner.call(inputs)
        finally:
            for attribute, weight, _, _ in self._slots:
                object.__setattr__(inner, attribute, weight)

    def compute_output_shape(self, input_shape):
        return self._inner.compute_output_shape(input_shape)


def check_supported(model):
    """Refuses layers the wrap cannot freeze or mask as the paper did (one line)."""
    for layer in constraint.walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            raise UsageError(f"branch supermask: --supermask=learned freezes every layer, and a frozen "
                             f"BatchNormalization ({layer.name}) normalises with its θ0 statistics; it takes "
                             "models without BatchNorm (the paper's FC and Conv-2/4/6)")
        if any(w.owner is not layer for w in prunable.layer_weights(layer)):
            raise UsageError(f"branch supermask: --supermask=learned masks weights a layer reads itself "
                             f"(Dense, Conv); layer {layer.name} ({type(layer).__name__}) keeps them in sublayers")


def _add_scores(model) -> Dict[str, List]:
    """Freezes the model, gives each prunable weight its score; {layer name: slots}."""
    for layer in constraint.walk_layers(model):
        layer.trainable = False
    by_layer, found = collections.defaultdict(list), collections.OrderedDict()
    for weight in prunable.prunable_weights(model):
        score = model.add_weight(name=f"{weight.path}{SCORE_SUFFIX}", shape=weight.variable.shape, dtype="float32",
                                 initializer="zeros", trainable=True, experimental_autocast=False)
        found[weight.path] = score
        by_layer[weight.layer.name].append((weight.attribute, weight.variable, weight.mask, score))
    object.__setattr__(model, _SCORES, found)
    return by_layer


def supermask_wrap(dynamic_scaling: bool) -> ModelWrap:
    """The ModelWrap that trains a learned supermask of the masked model (see the module docstring)."""

    def build(model):
        check_supported(model)
        slots = _add_scores(model)
        shared = SupermaskState()

        def clone(layer):
            if isinstance(layer, keras.Model):
                return keras.models.clone_model(layer, clone_function=clone)
            return Supermasked(layer, slots[layer.name], shared, dynamic_scaling) if layer.name in slots else layer

        forward = keras.models.clone_model(model, clone_function=clone)
        object.__setattr__(forward, _STATE, shared)
        return forward

    def reset(forward):
        state(forward).threshold.assign(False)  # the draws' seed is the run's (SupermaskRun.on_start)

    return ModelWrap(key=("supermask", bool(dynamic_scaling)), build=build, reset=reset)
