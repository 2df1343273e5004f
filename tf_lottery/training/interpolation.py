"""The straight line between two trained networks with one mask: errors, losses and predictions along it.

    line = Line(model, masks, eval_batch_size)
    line.set(alpha, w1, w2)                   # W(α) = α·W1 + (1-α)·W2, pruned weights stay 0
    line.recompute_batchnorm(batches)         # optional: BatchNorm statistics of W(α) itself
    loss, error, predictions = line.evaluate(dataset)

Every model variable but the masks is interpolated, BatchNorm moving statistics
included (the default of Frankle et al. 2020, who interpolate all of a network's
state). Both ends have the mask's zeros, so W(α) does too, exactly; the masks are
set again after each assignment all the same.
"""

from typing import Iterable, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery.pruning import constraint, prunable
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training import checkpoints


def interpolate(alpha: float, w1: Sequence[np.ndarray], w2: Sequence[np.ndarray]) -> List[np.ndarray]:
    """α·W1 + (1-α)·W2 in each variable's dtype: α=1 gives W1 and α=0 gives W2, bit for bit."""
    out = []
    for a, b in zip(w1, w2):
        a, b = np.asarray(a), np.asarray(b)
        if not np.issubdtype(a.dtype, np.floating):
            out.append(a if alpha >= 0.5 else b)  # counters and the like: not a point on a line
            continue
        t = a.dtype.type(alpha)
        out.append(t * a + (a.dtype.type(1) - t) * b)
    return out


def prunable_positions(model) -> List[Tuple[str, int]]:
    """(weight path, position in the model's weight files) of every prunable weight."""
    variables = constraint.model_weights(model)
    index = {id(v): i for i, v in enumerate(variables)}
    return [(w.path, index[id(w.variable)]) for w in prunable.prunable_weights(model)]


def batchnorm_layers(model) -> List[keras.layers.BatchNormalization]:
    return [layer for layer in constraint.walk_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


class Line:
    """Sets a model to points between two weight sets and evaluates it (one device, no strategy needed)."""

    def __init__(self, model, masks: Mapping[str, np.ndarray]):
        self.model = model
        self.masks = masks
        self._logits = tf.function(lambda images: tf.cast(model(images, training=False), tf.float32),
                                   reduce_retracing=True)

    def set(self, alpha: float, w1: Sequence[np.ndarray], w2: Sequence[np.ndarray]):
        checkpoints.assign_weights(self.model, interpolate(alpha, w1, w2), source=f"interpolated weights at alpha={alpha}")
        masks_lib.apply_masks(self.model, self.masks)

    def recompute_batchnorm(self, batches: Iterable[tf.Tensor]) -> int:
        """Replaces every BatchNorm layer's moving mean and variance by their average over
        `batches` (training mode, images only); returns how many batches were used."""
        layers = batchnorm_layers(self.model)
        if not layers:
            return 0
        saved = [layer.momentum for layer in layers]
        count = 0
        try:
            for count, images in enumerate(batches, start=1):
                for layer in layers:
                    # moving = momentum·moving + (1-momentum)·batch: momentum (n-1)/n is the running mean.
                    layer.momentum = (count - 1) / count
                self.model(images, training=True)
        finally:
            for layer, momentum in zip(layers, saved):
                layer.momentum = momentum
        return count

    def evaluate(self, dataset: tf.data.Dataset) -> Tuple[float, float, np.ndarray]:
        """(mean cross-entropy, error, predicted classes) over an (images, labels) dataset; a language
        model's are per character (every position of every window counts once)."""
        loss_sum, wrong, predictions = 0.0, 0, []
        for images, labels in dataset:
            logits = self._logits(images)
            loss_sum += float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(labels, tf.int64), logits=logits)))
            predicted = tf.argmax(logits, -1).numpy()
            wrong += int(np.sum(predicted != labels.numpy()))
            predictions.append(predicted)
        predicted = np.concatenate(predictions) if predictions else np.zeros([0], np.int64)
        count = max(predicted.size, 1)
        return loss_sum / count, wrong / count, predicted
