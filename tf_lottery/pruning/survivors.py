"""What a ticket's survivors start from (Zhou et al. 2019): transformations of a level's initial values.

All act on {prunable weight path: array} and only the kept positions matter (the
mask zeroes the rest):

  reshuffle        the level's initial values permuted among the kept positions of each weight;
  signed_reinit    fresh initial values with the level's initial signs;
  signed_constant  alpha * sign(w_i), alpha the weight's initialisation standard deviation;
  constant         the same alpha with random signs.

`alpha` is measured on θ0: the standard deviation of all the weight's initial values,
which is its initialiser's (Glorot uniform: sqrt(2 / (fan_in + fan_out))).
"""

import collections
from typing import Dict, Mapping

import numpy as np

INITS = ("fresh", "reshuffle", "signed_reinit", "signed_constant", "constant")


def init_scales(theta_0: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """alpha of every weight: the standard deviation of its values in θ0."""
    return {path: float(np.std(value)) for path, value in theta_0.items()}


def reshuffle(initial: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], rng: np.random.Generator):
    """Each weight's kept values permuted among its kept positions: each keeps its multiset."""
    result = collections.OrderedDict()
    for path, value in initial.items():
        flat, kept = np.array(value).reshape(-1), np.flatnonzero(np.asarray(masks[path]).reshape(-1) > 0)
        flat[kept] = flat[rng.permutation(kept)]
        result[path] = flat.reshape(np.shape(value))
    return result


def _signs(value: np.ndarray) -> np.ndarray:
    """sign(value) with 0 counted as +1, so that every kept weight gets a magnitude."""
    return np.where(np.asarray(value) < 0, -1.0, 1.0)


def signed_reinit(initial: Mapping[str, np.ndarray], fresh: Mapping[str, np.ndarray]):
    """|fresh| with the signs of `initial`."""
    return collections.OrderedDict(
        (path, (np.abs(fresh[path]) * _signs(value)).astype(np.asarray(value).dtype)) for path, value in initial.items())


def signed_constant(initial: Mapping[str, np.ndarray], alphas: Mapping[str, float]):
    """alpha * sign(w_i) per weight."""
    return collections.OrderedDict(
        (path, (alphas[path] * _signs(value)).astype(np.asarray(value).dtype)) for path, value in initial.items())


def constant(initial: Mapping[str, np.ndarray], alphas: Mapping[str, float], rng: np.random.Generator):
    """alpha with signs drawn at random, +1 or -1 with equal odds."""
    return collections.OrderedDict(
        (path, (alphas[path] * rng.choice([-1.0, 1.0], size=np.shape(value))).astype(np.asarray(value).dtype))
        for path, value in initial.items())
