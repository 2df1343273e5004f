"""Mask sets: {prunable layer name: 0/1 array}, their densities and their files."""

import collections
import os
from typing import Dict, Mapping

import numpy as np

from tf_lottery.pruning import constraint
from tf_lottery.utils import atomic_path

Masks = Dict[str, np.ndarray]


def get_masks(model) -> Masks:
    return collections.OrderedDict(
        (layer.name, layer.kernel_constraint.mask.numpy().astype(np.float32))
        for layer in constraint.prunable_layers(model)
    )


def get_kernels(model) -> Dict[str, np.ndarray]:
    return collections.OrderedDict(
        (layer.name, layer.kernel.numpy()) for layer in constraint.prunable_layers(model)
    )


def ones_like_model(model) -> Masks:
    return collections.OrderedDict(
        (layer.name, np.ones(layer.kernel.shape, np.float32))
        for layer in constraint.prunable_layers(model)
    )


def apply_masks(model, masks: Mapping[str, np.ndarray]):
    """Sets the model's masks and zeroes the pruned kernel weights (on every replica)."""
    layers = {layer.name: layer for layer in constraint.prunable_layers(model)}
    if set(layers) != set(masks):
        raise ValueError(
            f"mask layers {sorted(masks)} do not match the model's prunable layers {sorted(layers)}"
        )
    for name, layer in layers.items():
        mask = np.asarray(masks[name], np.float32)
        if mask.shape != tuple(layer.kernel.shape):
            raise ValueError(f"mask for {name} has shape {mask.shape}, kernel {tuple(layer.kernel.shape)}")
        layer.kernel_constraint.mask.assign(mask)
        layer.kernel.assign(layer.kernel * mask)


def counts(masks: Mapping[str, np.ndarray]) -> Dict[str, int]:
    return {name: int(np.count_nonzero(m)) for name, m in masks.items()}


def layer_densities(masks: Mapping[str, np.ndarray]) -> Dict[str, float]:
    return {name: float(np.count_nonzero(m)) / m.size for name, m in masks.items()}


def density(masks: Mapping[str, np.ndarray]) -> float:
    """Fraction of prunable weights remaining."""
    total = sum(m.size for m in masks.values())
    return sum(int(np.count_nonzero(m)) for m in masks.values()) / total if total else 1.0


def save(path: str, masks: Mapping[str, np.ndarray]):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{name: np.asarray(m, np.uint8) for name, m in masks.items()})


def load(path: str) -> Masks:
    try:
        with np.load(path) as data:
            return collections.OrderedDict((name, data[name].astype(np.float32)) for name in data.files)
    except (OSError, ValueError, KeyError) as error:
        raise IOError(f"cannot read mask file {path}: {error}; delete it to recompute it") from None


def exists(path: str) -> bool:
    return os.path.exists(path)
