"""Scores for pruning at initialisation: SNIP, GraSP, SynFlow, magnitude and random.

Every function takes a built model of this project (tf_lottery.models: its output
is logits, which SynFlow needs, as the sum of a softmax is constant) at the weights
to score, and returns {prunable weight path: numpy score}, higher kept, for
strategies.ranked_masks. The model's weights and masks are left as they were.

  snip(model, batches)       |Σ_b g_b ⊙ θ| (Lee et al. 2019), g_b the gradient of batch b's mean loss;
  grasp(model, batches, T)   θ ⊙ Hg (Wang et al. 2020): g the summed gradients of loss(logits / T)
                             (stopped), Hg their Hessian-vector product by double backprop; kept
                             highest, as in the Synaptic-Flow code ("negate to remove top percent");
  synflow(model)             |∂R/∂θ ⊙ θ| with every weight at |θ|, an all-ones input and R the sum of
                             the outputs (Tanaka et al. 2020); reads no data. synflow_masks prunes
                             with it over rounds, to density d^(k/R) at round k;
  magnitude(model)           |θ|;
  random(model, seed)        uniform draws.

Gradients are taken with respect to the prunable weights only (biases and other
variables held fixed), the model called with training=False, as the reference
code scores in eval mode.
"""

import collections
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery.errors import RunError
from tf_lottery.pruning import constraint, prunable, strategies
from tf_lottery.pruning import masks as masks_lib

Scores = Dict[str, np.ndarray]
Batch = Tuple[tf.Tensor, tf.Tensor]  # (images, labels)
_ZERO = tf.UnconnectedGradients.ZERO  # a weight the loss does not reach scores 0, not None


def _loss(model, images, labels, temperature: float = 1.0) -> tf.Tensor:
    """The batch's mean cross-entropy of the model's logits divided by `temperature`."""
    logits = tf.cast(model(images, training=False), tf.float32) / temperature
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))


def _summed_gradients(model, batches: Iterable[Batch], temperature: float = 1.0):
    """Σ_b ∂loss_b/∂w over the prunable weights w, and the number of batches."""
    variables = [w.variable for w in prunable.prunable_weights(model)]
    total, count = [tf.zeros_like(v) for v in variables], 0
    for images, labels in batches:
        with tf.GradientTape() as tape:
            loss = _loss(model, images, labels, temperature)
        total = [t + g for t, g in zip(total, tape.gradient(loss, variables, unconnected_gradients=_ZERO))]
        count += 1
    if not count:
        raise ValueError("no batch to score on")
    return total, count


def snip(model, batches: Iterable[Batch]) -> Scores:
    """SNIP's connection sensitivity |Σ_b g_b ⊙ θ| (the gradient of the loss with respect to an all-ones mask)."""
    gradients, _ = _summed_gradients(model, batches)
    return collections.OrderedDict((w.path, np.abs((g * w.variable).numpy()))
                                   for w, g in zip(prunable.prunable_weights(model), gradients))


def grasp(model, batches: Sequence[Batch], temperature: float = 200.0) -> Scores:
    """GraSP's θ ⊙ Hg, g = Σ_b ∇loss_b(logits / T) stopped, Hg = Σ_b ∇(∇loss_b · g): higher kept."""
    batches = list(batches)  # read twice
    weights = prunable.prunable_weights(model)
    variables = [w.variable for w in weights]
    stopped, _ = _summed_gradients(model, batches, temperature)
    products = [tf.zeros_like(v) for v in variables]
    for images, labels in batches:
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = _loss(model, images, labels, temperature)
            gradients = inner.gradient(loss, variables, unconnected_gradients=_ZERO)
            dot = tf.add_n([tf.reduce_sum(g * s) for g, s in zip(gradients, stopped)])
        products = [p + h for p, h in zip(products, outer.gradient(dot, variables, unconnected_gradients=_ZERO))]
    return collections.OrderedDict((w.path, (h * w.variable).numpy()) for w, h in zip(weights, products))


def synflow(model) -> Scores:
    """One SynFlow scoring: |∂R/∂θ ⊙ θ| with every variable at |θ| (masks aside), R = Σ model(ones).

    Reads no data: the input is ones of the model's input shape, one example.

    Raises:
      RunError: R overflowed float32 (a deep network whose |θ| products exceed it).
    """
    if isinstance(model.input_shape, list):
        raise ValueError(f"synflow: model {model.name} takes several inputs")
    variables = constraint.model_weights(model)
    saved = [v.numpy() for v in variables]
    weights = prunable.prunable_weights(model)
    try:
        for variable in variables:  # linearised: the signs come back in `finally`
            variable.assign(tf.abs(variable))
        ones = tf.ones([1, *model.input_shape[1:]], model.inputs[0].dtype)
        with tf.GradientTape() as tape:
            flow = tf.reduce_sum(tf.cast(model(ones, training=False), tf.float32))
        gradients = tape.gradient(flow, [w.variable for w in weights], unconnected_gradients=_ZERO)
        scores = collections.OrderedDict((w.path, np.abs((g * w.variable).numpy())) for w, g in zip(weights, gradients))
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)
    if not np.isfinite(float(flow)) or not all(np.all(np.isfinite(s)) for s in scores.values()):
        raise RunError(f"synflow: the synaptic flow of model {model.name} overflows float32 ({float(flow)})")
    return scores


def synflow_masks(model, group_list: Sequence[strategies.Group], level: int, rounds: int,
                  invert: bool = False) -> masks_lib.Masks:
    """SynFlow's iterative pruning from the model's current masks to `level`'s exact counts.

    Round k of `rounds` scores the model as the previous round left it (pruned weights
    zero) and keeps each group's count at level level*k/rounds, i.e. density d^(k/rounds)
    of the level's d: the exponential schedule, the last round exactly at the level.
    `invert` keeps the lowest scores every round. The model's masks and weights are
    restored afterwards.
    """
    if rounds < 1:
        raise ValueError(f"synflow: rounds must be >= 1, got {rounds}")
    start = masks_lib.get_masks(model)
    saved = [v.numpy() for v in constraint.model_weights(model)]
    current = start
    try:
        for k in range(1, rounds + 1):
            scores = synflow(model)
            if invert:
                scores = collections.OrderedDict((p, -s) for p, s in scores.items())
            current = strategies.ranked_masks(scores, current, group_list, level * k / rounds)
            masks_lib.apply_masks(model, current)
    finally:
        masks_lib.apply_masks(model, start)
        for variable, value in zip(constraint.model_weights(model), saved):
            variable.assign(value)
    return current


def magnitude(model) -> Scores:
    """|θ| of the prunable weights (magnitude pruning at initialisation)."""
    return collections.OrderedDict((p, np.abs(v)) for p, v in masks_lib.prunable_values(model).items())


def random(model, seed: int) -> Scores:
    """Uniform scores drawn from `seed`, weight after weight in model order: a random mask."""
    rng = np.random.default_rng(seed)
    return collections.OrderedDict((w.path, rng.random(tuple(w.variable.shape)))
                                   for w in prunable.prunable_weights(model))
