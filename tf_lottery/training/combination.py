"""Networks combined after training: ensembles (the mean of their logits) and weight averages ("soups").

    evaluator = Evaluator(model, dataset)          # an (images, labels) test set
    logits = evaluator.logits(weights, masks)      # [examples, classes] float32, in the set's order
    accuracy(ensemble_logits([l1, l2]), evaluator.labels)
    soup = average([w1, w2, w3])                   # every variable, BatchNorm statistics included

An ensemble averages logits, not probabilities. A weight average takes the mean of
every variable the weight files hold, so BatchNorm moving statistics are averaged
like the weights (nothing is recomputed). Copies with one mask have zeros at the
same places, so their average has exactly those zeros: `check_masked` says so.
"""

from typing import List, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tf_lottery.errors import RunError
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training import checkpoints


def average(weight_sets: Sequence[Sequence[np.ndarray]]) -> List[np.ndarray]:
    """The mean of each variable over the sets, in the variable's dtype (non-float variables,
    counters and the like, are the first set's)."""
    if not weight_sets or len({len(w) for w in weight_sets}) != 1:
        raise ValueError("average: needs weight sets of the same variables")
    out = []
    for values in zip(*weight_sets):
        first = np.asarray(values[0])
        if not np.issubdtype(first.dtype, np.floating):
            out.append(first)
            continue
        out.append(np.mean(np.stack([np.asarray(v, np.float64) for v in values]), axis=0).astype(first.dtype))
    return out


def check_masked(weights: Sequence[np.ndarray], positions, masks: Mapping[str, np.ndarray], what: str):
    """Raises RunError unless every pruned position of every prunable weight is exactly 0.

    Args:
      positions: (weight path, position in `weights`) of the prunable weights
        (training.interpolation.prunable_positions).
    """
    for path, index in positions:
        if np.any(np.asarray(weights[index])[np.asarray(masks[path]) == 0] != 0):
            raise RunError(f"{what}: weight {path} is not zero where its mask is; the copies' masks differ")


def ensemble_logits(logit_sets: Sequence[np.ndarray]) -> np.ndarray:
    """The ensemble's logits: the members' mean."""
    return np.mean(np.stack(logit_sets), axis=0)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == labels)) if len(labels) else 0.0


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy of integer `labels`."""
    if not len(labels):
        return 0.0
    logits = np.asarray(logits, np.float64)
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    log_probabilities = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    return float(-np.mean(log_probabilities[np.arange(len(labels)), labels]))


def same_masks(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(np.array_equal(a[path], b[path]) for path in a)


def overlap(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """Intersection over union of two masks' kept weights, over all the prunable weights together."""
    both = sum(int(np.count_nonzero((a[p] > 0) & (b[p] > 0))) for p in a)
    either = sum(int(np.count_nonzero((a[p] > 0) | (b[p] > 0))) for p in a)
    return both / either if either else 1.0


class Evaluator:
    """Sets a model to weight sets and returns its logits on one dataset (one device, no strategy needed)."""

    def __init__(self, model, dataset: tf.data.Dataset):
        self.model = model
        self.dataset = dataset
        self._logits = tf.function(lambda images: tf.cast(model(images, training=False), tf.float32),
                                   reduce_retracing=True)
        self._labels = None

    @property
    def labels(self) -> np.ndarray:
        """The dataset's labels, in order (int64)."""
        if self._labels is None:
            batches = [labels.numpy() for _, labels in self.dataset]
            self._labels = np.concatenate(batches).astype(np.int64) if batches else np.zeros([0], np.int64)
        return self._labels

    def logits(self, weights: Sequence[np.ndarray], masks: Mapping[str, np.ndarray], source: str = "weights") -> np.ndarray:
        """The logits of the model with `weights` (every variable but the masks) and `masks`."""
        checkpoints.assign_weights(self.model, list(weights), source=source)
        masks_lib.apply_masks(self.model, masks)
        batches = [self._logits(images).numpy() for images, _ in self.dataset]
        return np.concatenate(batches) if batches else np.zeros([0, 0], np.float32)
