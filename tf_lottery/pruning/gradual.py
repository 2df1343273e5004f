"""Pruning during training: the schedule, the scores and exact per-weight counts (numpy only).

A run prunes n times, at iterations start + j·interval (j = 1..n, the last at or
before `until`). Weight w with n_w entries keeps round(n_w · (c_w / n_w)^(j/n))
after pruning j, c_w its target count: a constant fraction of the remaining
weights goes at every pruning, and pruning n leaves exactly c_w, to the weight.
A pruned weight never comes back: each mask keeps only survivors of the last.
"""

import collections
import math
from typing import Dict, List, Mapping

import numpy as np

from tf_lottery.pruning.masks import Masks

CRITERIA = ("magnitude", "movement")


def epoch_iterations(train_examples: int, batch_size: int) -> int:
    """Iterations in one pass over the training split: ceil(examples / batch size)."""
    return max(1, math.ceil(train_examples / batch_size))


def prune_iterations(start: int, interval: int, until: int) -> List[int]:
    """The iterations a run starting at `start` prunes at: every `interval` after it, up to `until`."""
    return list(range(start + interval, until + 1, interval)) if interval > 0 else []


def counts_after(sizes: Mapping[str, int], targets: Mapping[str, int], pruning: int, prunings: int) -> Dict[str, int]:
    """Survivors of each weight after pruning `pruning` of `prunings` (0: none yet; `prunings`: the targets)."""
    result = collections.OrderedDict()
    for name, size in sizes.items():
        target = targets[name]
        if pruning >= prunings:
            result[name] = target
        else:
            geometric = size * (target / size) ** (pruning / prunings) if size else 0.0
            result[name] = int(min(size, max(target, np.floor(geometric + 0.5))))
    return result


def scores(criterion: str, current: Mapping[str, np.ndarray], start: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """What each criterion keeps (higher kept): magnitude |w_now|; movement |w_now - w_start|,
    w_start the weights at the run's start (so the weights that moved least go)."""
    if criterion == "magnitude":
        return {name: np.abs(w) for name, w in current.items()}
    if criterion == "movement":
        return {name: np.abs(w - start[name]) for name, w in current.items()}
    raise ValueError(f"unknown pruning criterion {criterion!r}; known: {', '.join(CRITERIA)}")


def prune_to_counts(scores_by_name: Mapping[str, np.ndarray], current: Masks, keep: Mapping[str, int]) -> Masks:
    """Keeps, in each weight, its `keep[name]` highest-scoring survivors of `current`.

    Already-pruned weights never come back; ties break by position (deterministic).

    Raises:
      ValueError: a weight is asked to keep more than survive.
    """
    result = collections.OrderedDict()
    for name, mask in current.items():
        flat_mask = mask.reshape(-1) > 0
        survivors = int(np.count_nonzero(flat_mask))
        if keep[name] > survivors:
            raise ValueError(f"{name}: asked to keep {keep[name]} weights but only {survivors} survive")
        ranked = np.where(flat_mask, np.asarray(scores_by_name[name], np.float64).reshape(-1), -np.inf)
        chosen = np.zeros(mask.size, np.float32)
        chosen[np.argsort(-ranked, kind="stable")[:keep[name]]] = 1.0
        result[name] = chosen.reshape(mask.shape)
    return result
