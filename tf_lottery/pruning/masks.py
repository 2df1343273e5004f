"""Mask sets: {prunable weight path: 0/1 float32 array}, their densities and their files.

A path is '<model layer name>/<attribute>' (tf_lottery.pruning.prunable). Mask
files are written and read by tf_lottery.experiment.files, which reads the files
of experiments made before masks were keyed by weight ('fc1' means 'fc1/kernel').
"""

import collections
import collections.abc
import os
from typing import Dict, Mapping

import numpy as np

from tf_lottery.errors import RunError
from tf_lottery.experiment.files import Masks, exists, read_masks, write_masks
from tf_lottery.pruning import prunable

save, load = write_masks, read_masks
__all__ = ["Masks", "MaskFile", "get_masks", "prunable_values", "ones_like_model", "apply_masks", "counts",
           "weight_densities", "density", "save", "load", "exists"]


def get_masks(model) -> Masks:
    return collections.OrderedDict(
        (w.path, w.mask.numpy().astype(np.float32)) for w in prunable.prunable_weights(model)
    )


def prunable_values(model) -> Dict[str, np.ndarray]:
    """The current values of the prunable weights: what magnitude pruning ranks."""
    return collections.OrderedDict((w.path, w.variable.numpy()) for w in prunable.prunable_weights(model))


def ones_like_model(model) -> Masks:
    return collections.OrderedDict(
        (w.path, np.ones(w.variable.shape, np.float32)) for w in prunable.prunable_weights(model)
    )


def apply_masks(model, masks: Mapping[str, np.ndarray]):
    """Sets the model's masks and zeroes the pruned weights (on every replica).

    Raises:
      RunError: the masks are not the model's (other paths or shapes): a mask file
        of one experiment read for another model.
    """
    weights = prunable.prunable_weights(model)
    paths = [w.path for w in weights]
    if set(paths) != set(masks):
        raise RunError(f"masks for {', '.join(sorted(masks)) or 'no weights'} do not match the model's "
                       f"prunable weights {', '.join(sorted(paths))}")
    for weight in weights:
        mask = np.asarray(masks[weight.path], np.float32)
        if mask.shape != tuple(weight.variable.shape):
            raise RunError(f"mask for {weight.path} has shape {mask.shape}, "
                           f"the weight {tuple(weight.variable.shape)}")
    for weight in weights:
        mask = np.asarray(masks[weight.path], np.float32)
        weight.mask.assign(mask)
        weight.variable.assign(weight.variable * mask)


def counts(masks: Mapping[str, np.ndarray]) -> Dict[str, int]:
    return {path: int(np.count_nonzero(m)) for path, m in masks.items()}


def weight_densities(masks: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """The fraction of each prunable weight that remains, by path."""
    return {path: float(np.count_nonzero(m)) / m.size for path, m in masks.items()}


def density(masks: Mapping[str, np.ndarray]) -> float:
    """Fraction of prunable weights remaining."""
    total = sum(m.size for m in masks.values())
    return sum(int(np.count_nonzero(m)) for m in masks.values()) / total if total else 1.0


class MaskFile(collections.abc.Mapping):
    """A mask file another step writes before a run needs it, read on first use.

    Args:
      path: the mask file.
      missing: the end of the message when it does not exist ("{path} is missing: <missing>").
      recover: what to do when it is corrupted (files.read_masks's `recover`).
    """

    def __init__(self, path: str, missing: str, recover: str):
        self.path, self.missing, self.recover, self._masks = path, missing, recover, None

    def _read(self) -> Masks:
        if self._masks is None:
            if not os.path.exists(self.path):
                raise RunError(f"{self.path} is missing: {self.missing}")
            self._masks = read_masks(self.path, recover=self.recover)
        return self._masks

    def __getitem__(self, name):
        return self._read()[name]

    def __iter__(self):
        return iter(self._read())

    def __len__(self):
        return len(self._read())
