"""Which weights to prune: magnitude (layerwise or global) and random masks.

Level L of a weight (or group of weights) with per-level rate p keeps
round(n * (1-p)^L) of its n weights. Counting from n at every level, rather than
from the previous level's count, keeps the schedule exact to one weight however
many levels run; iterative and one-shot pruning reach the same densities.
"""

import collections
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tf_lottery.config import ConfigError
from tf_lottery.pruning import prunable
from tf_lottery.pruning.masks import Masks

Group = Tuple[Tuple[str, ...], float]  # (weight paths ranked together, per-level rate)


def weight_kinds(model) -> Dict[str, str]:
    """The kind of every prunable weight by path: its layer type's, or 'output' for
    every prunable weight of the layers the model declares as its outputs."""
    outputs = prunable.output_layers(model)
    return collections.OrderedDict(
        (w.path, "output" if w.layer.name in outputs else w.kind) for w in prunable.prunable_weights(model)
    )


def ignored_paths(model, ignore: Sequence[str]):
    """The weight paths `--prune_layers_ignore` names: a layer name stands for all its prunable weights.

    Raises:
      ConfigError: an entry names no prunable layer or weight.
    """
    weights = prunable.prunable_weights(model)
    by_name = collections.defaultdict(set)
    for w in weights:
        by_name[w.layer.name].add(w.path)
        by_name[w.path].add(w.path)
    unknown = [entry for entry in ignore if entry not in by_name]
    if unknown:
        raise ConfigError(
            f"--prune_layers_ignore: no prunable layer or weight named {', '.join(unknown)}; "
            f"prunable weights: {', '.join(w.path for w in weights)}"
        )
    return set().union(*(by_name[entry] for entry in ignore))


def weight_rates(model, pruning_config) -> Dict[str, float]:
    """The per-level pruning rate of every prunable weight by path (0 for ignored ones)."""
    ignored = ignored_paths(model, pruning_config.prune_layers_ignore)
    return collections.OrderedDict(
        (path, 0.0 if path in ignored else pruning_config.rate_for(kind))
        for path, kind in weight_kinds(model).items()
    )


def groups(rates: Mapping[str, float], scope: str) -> List[Group]:
    """Layerwise: one group per weight. Global: one group per distinct rate."""
    if scope == "layerwise":
        return [((name,), rate) for name, rate in rates.items()]
    by_rate = collections.OrderedDict()
    for name, rate in rates.items():
        by_rate.setdefault(rate, []).append(name)
    return [(tuple(names), rate) for rate, names in by_rate.items()]


def keep_count(size: int, rate: float, level: int) -> int:
    """Weights of `size` that survive `level` levels at `rate` per level."""
    return int(np.floor(size * (1.0 - rate) ** level + 0.5))


def magnitude_masks(
    scores: Mapping[str, np.ndarray], current: Masks, group_list: Sequence[Group], level: int
) -> Masks:
    """Keeps, in every group, the surviving weights of largest |score| up to the level's count.

    Already-pruned weights never come back; ties break by position, so the result
    is deterministic.
    """
    return ranked_masks({name: np.abs(value) for name, value in scores.items()}, current, group_list, level)


def ranked_masks(
    scores: Mapping[str, np.ndarray], current: Masks, group_list: Sequence[Group], level: int,
    last: Optional[Mapping[str, np.ndarray]] = None,
) -> Masks:
    """Keeps, in every group, the highest-scoring surviving weights up to the level's count.

    Scores are used as they are (higher kept; negative values rank below zero).
    Survivors where `last` is true rank below every other survivor, whatever their
    score: they are kept only when the count needs them. Already-pruned weights never
    come back; ties break by position, so the result is deterministic.
    """
    result = collections.OrderedDict((name, None) for name in current)
    for names, rate in group_list:
        sizes = [current[n].size for n in names]
        keep = keep_count(sum(sizes), rate, level)
        pruned = np.concatenate([current[n].reshape(-1) <= 0 for n in names])
        flat = np.concatenate([np.asarray(scores[n], np.float64).reshape(-1) for n in names])
        demoted = (np.concatenate([np.asarray(last[n], bool).reshape(-1) for n in names]) if last is not None
                   else np.zeros(flat.size, bool))
        survivors = int(np.count_nonzero(~pruned))
        if keep > survivors:
            raise ValueError(f"level {level} keeps {keep} weights of {names} but only {survivors} survive")
        # np.lexsort is stable and sorts by its last key first: pruned last, then demoted, then by score.
        order = np.lexsort((-flat, demoted, pruned))
        chosen = np.zeros(flat.size, np.float32)
        chosen[order[:keep]] = 1.0
        for name, piece in zip(names, np.split(chosen, np.cumsum(sizes)[:-1])):
            result[name] = piece.reshape(current[name].shape)
    return result


def random_masks(like: Masks, seed: int) -> Masks:
    """Masks with the same per-weight counts as `like`, positions drawn at random."""
    rng = np.random.default_rng(seed)
    result = collections.OrderedDict()
    for name, mask in like.items():
        flat = np.zeros(mask.size, np.float32)
        flat[rng.permutation(mask.size)[: int(np.count_nonzero(mask))]] = 1.0
        result[name] = flat.reshape(mask.shape)
    return result


def expected_counts(sizes: Mapping[str, int], rates: Mapping[str, float], scope: str, level: int) -> Dict[str, int]:
    """Remaining weights per prunable weight (layerwise) or per group (global) at `level`.

    For global scope only the group total is fixed, so the value is keyed by the
    group's names joined with '+'.
    """
    return {
        "+".join(names): keep_count(sum(sizes[n] for n in names), rate, level)
        for names, rate in groups(rates, scope)
    }


def batchnorm_gammas(model) -> Dict[str, np.ndarray]:
    """|gamma| source of --channel_score=batchnorm: every BatchNorm layer's scale, by layer name."""
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    return {layer.name: layer.gamma.numpy() for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization) and getattr(layer, "gamma", None) is not None}


def level_masks(model, current: Masks, pruning_config, level: int) -> Masks:
    """Level `level`'s mask by magnitude from the model's current weights and the surviving `current`,
    in --pruning_structure's unit: weights (magnitude_masks), whole units (structure.structured_masks)
    or N of every M (structure.n_of_m_masks). IMP's rule, which Early-Bird's draws follow too."""
    from tf_lottery.pruning import masks as masks_lib, structure  # pylint: disable=import-outside-toplevel

    values = masks_lib.prunable_values(model)
    rates = weight_rates(model, pruning_config)
    kind = pruning_config.pruning_structure
    if kind == "n_of_m":
        return structure.n_of_m_masks(values, current, rates, tuple(pruning_config.n_of_m), level, weight_kinds(model))
    if kind in ("neurons", "channels"):
        unit_groups = structure.structure_groups(model, kind)
        gammas = batchnorm_gammas(model) if pruning_config.channel_score == "batchnorm" else None
        return structure.structured_masks(unit_groups, values, current, rates, pruning_config.pruning_scope, level,
                                          pruning_config.channel_score, gammas)
    return magnitude_masks(values, current, groups(rates, pruning_config.pruning_scope), level)
