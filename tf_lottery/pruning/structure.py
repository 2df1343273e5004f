"""Structured pruning: which units (neurons, channels) a layer can lose, and their masks.

A *unit group* is a prunable Dense or Conv layer (never an output layer) whose
output units (kernel columns, conv filters: the kernel's last axis) can be removed
one by one: the graph carries each unit, through layers without parameters of
their own (activations, pooling, dropout, Flatten, global pooling) or with one per
channel (BatchNorm), to the prunable kernels that read it, its *consumers*, and
to nothing else. Removing a unit zeroes its kernel column and every consumer's
input rows of it; through a Flatten a channels-last input index i belongs to unit
i % units (`Consumer.tile` = H*W rows per unit). Graphs where a unit cannot be
removed alone (a residual Add, a Concatenate, a reshape) are refused in one line.

Masks stay weight masks (what MaskConstraint applies and density counts): a
structured mask is the weight mask `weight_masks` derives from the kept units.
A removed Dense unit keeps its bias and a removed channel its BatchNorm offset, so
it outputs a constant; its consumers' rows are zero, so nothing reads it, and an
export drops both.

Levels (`structured_masks`): level L keeps max(1, round(units * (1-p)^L)) units of
each group (layerwise), p the rate of the layer's kind; global scope ranks the
units of all groups sharing a rate together and keeps round(total * (1-p)^L) of
them, at least one per group. Units are scored by the L1 norm of their surviving
weights (global: the mean |w| over them, so layers of other fan-in compare), or by
|gamma| of the BatchNorm right after the layer (--channel_score=batchnorm).
Removed units rank below every survivor and never come back; ties break by position.

n_of_m (`n_of_m_masks`): level L keeps k = max(N, round(M * (1-p)^L)) of every M
consecutive weights along each kernel's input axis (Dense: rows; Conv: input
channels, per kernel position and filter), by |w|: the pattern of sparse tensor
cores once k reaches N (2:4 at the first level with p=0.5). A trailing block of
r < M weights keeps min(k, r).
"""

import collections
import dataclasses
import json
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tf_lottery.errors import UsageError
from tf_lottery.experiment.files import Masks

# TensorFlow loads only where a model is walked: results.csv's units_kept and the random_prune
# control read structure.json with the rest of this module, TensorFlow-free.

STRUCTURE_FILE = "structure.json"  # <experiment>/structure.json: the unit groups of a structured experiment

@dataclasses.dataclass(frozen=True)
class Consumer:
    path: str  # weight path of a prunable kernel that reads the group's outputs (e.g. "fc2/kernel")
    axis: int  # that kernel's input axis (Dense: 0, Conv2D: 2)
    tile: int  # 1, or H*W when a Flatten lies between (channels-last: input index i belongs to unit i % units)


@dataclasses.dataclass(frozen=True)
class UnitGroup:
    layer: str  # the producing layer's name (a Dense or Conv layer, never an output layer)
    path: str  # its kernel's weight path
    units: int  # its output units / channels (the kernel's last axis)
    bias: Optional[str]  # its bias variable's path-like name (layer/bias) or None
    batchnorm: Optional[str]  # name of a BatchNorm layer applied right after it (through nothing but itself), or None
    consumers: Tuple[Consumer, ...]
    kind: str = "dense"  # 'dense' (its units are neurons) or 'conv' (channels: filters)


def _layer_types():
    """(pass-through layer types, unit layer types, excluded unit layer types, merge base), loaded on first use."""
    import tf_keras as keras  # pylint: disable=import-outside-toplevel
    from tf_keras.src.layers.merging.base_merge import _Merge  # pylint: disable=import-outside-toplevel

    L = keras.layers
    # Layers a unit passes through unchanged (each output channel depends on its own input channel only).
    passing = (
        L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.ThresholdedReLU, L.Dropout, L.GaussianNoise, L.GaussianDropout,
        L.AlphaDropout, L.ActivityRegularization, L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
        L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
        L.GlobalAveragePooling2D, L.GlobalAveragePooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D,
        L.GlobalMaxPooling3D, L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D,
        L.Cropping3D, L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
    )
    return (passing, (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D),
            (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose), _Merge, keras)


def _is_unit_layer(layer) -> bool:
    _, units, excluded, _, _ = _layer_types()
    return isinstance(layer, units) and not isinstance(layer, excluded)


def _passes(layer) -> bool:
    return isinstance(layer, _layer_types()[0]) or type(layer).__name__.endswith("Dropout")


def _outbound(layer, members) -> list:
    """The model's layers that read `layer`'s output (once per call)."""
    return [node.outbound_layer for node in layer._outbound_nodes  # pylint: disable=protected-access
            if id(node.outbound_layer) in members]


def _refuse(producer, layer, why: str):
    raise UsageError(f"layer {producer.name}'s units cannot be removed independently: they reach "
                     f"{layer.name} ({type(layer).__name__}), {why}; use --pruning_structure=unstructured")


def _walk(model, producer, weights_by_layer, members) -> Tuple[Optional[str], Tuple[Consumer, ...]]:
    """(BatchNorm right after `producer`, the kernels reading its units), or UsageError."""
    _, _, _, merge, keras = _layer_types()
    consumers, batchnorm = [], None
    first = _outbound(producer, members)
    if len(first) == 1 and isinstance(first[0], keras.layers.BatchNormalization):
        batchnorm = first[0].name
    stack = [(layer, 1) for layer in first]
    if not stack:
        raise UsageError(f"layer {producer.name}'s units are a model output: they cannot be removed; "
                         "use --pruning_structure=unstructured")
    while stack:
        layer, tile = stack.pop()
        if len(layer._inbound_nodes) > 1:  # pylint: disable=protected-access
            _refuse(producer, layer, "a layer called more than once")
        if isinstance(layer, keras.layers.InputLayer) or isinstance(layer, keras.Model):
            _refuse(producer, layer, "a nested model")
        if isinstance(layer, keras.layers.BatchNormalization):
            ndim = len(layer.input_shape)
            if list(layer.axis) != [ndim - 1]:
                _refuse(producer, layer, "a BatchNorm over another axis than the channels")
        elif _is_unit_layer(layer) and layer.name in weights_by_layer:
            kernel = weights_by_layer[layer.name]
            if len(layer.input_shape) < 2 or isinstance(layer.input, (list, tuple)):
                _refuse(producer, layer, "a layer with several inputs")
            consumers.append(Consumer(kernel.path, len(kernel.variable.shape) - 2, tile))
            continue  # its own units are another group
        elif isinstance(layer, keras.layers.Flatten):
            shape = layer.input_shape
            tile *= int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
        elif isinstance(layer, keras.layers.Layer) and _passes(layer) and not layer.trainable_weights:
            pass
        elif isinstance(layer, merge):
            _refuse(producer, layer, "a merge of several inputs (a residual Add, a Concatenate)")
        else:
            _refuse(producer, layer, "a layer that mixes or reshapes units or has unmasked weights")
        following = _outbound(layer, members)
        if not following:
            _refuse(producer, layer, "a model output")
        stack.extend((f, tile) for f in following)
    order = {w: i for i, w in enumerate(weights_by_layer)}
    consumers.sort(key=lambda c: order.get(c.path.split("/")[0], 0))
    return batchnorm, tuple(dict.fromkeys(consumers))


def unit_groups(model, kinds: Sequence[str] = ("dense", "conv")) -> List[UnitGroup]:
    """Every prunable Dense/Conv layer (not an output layer, of `kinds`) whose units can be removed
    alone, in model order, with the kernels that read them.

    Raises:
      UsageError: a layer's units cannot be removed independently (one line naming it).
    """
    import tf_keras as keras  # pylint: disable=import-outside-toplevel
    from tf_lottery.pruning import prunable  # pylint: disable=import-outside-toplevel

    outputs = set(prunable.output_layers(model))
    weights = prunable.prunable_weights(model)
    weights_by_layer = collections.OrderedDict((w.layer.name, w) for w in weights if w.attribute == "kernel")
    members = {id(layer) for layer in model.layers}
    groups = []
    for layer in model.layers:
        if layer.name in outputs or layer.name not in weights_by_layer or not _is_unit_layer(layer):
            continue
        dense = isinstance(layer, keras.layers.Dense)
        if ("dense" if dense else "conv") not in kinds:
            continue
        if len(layer._inbound_nodes) > 1:  # pylint: disable=protected-access
            raise UsageError(f"layer {layer.name} is called more than once: its units cannot be removed "
                             "independently; use --pruning_structure=unstructured")
        kernel = weights_by_layer[layer.name]
        batchnorm, consumers = _walk(model, layer, weights_by_layer, members)
        bias = f"{layer.name}/bias" if getattr(layer, "use_bias", False) else None
        groups.append(UnitGroup(layer.name, kernel.path, int(kernel.variable.shape[-1]), bias, batchnorm,
                                consumers, "dense" if dense else "conv"))
    return groups


def structure_groups(model, structure: str) -> List[UnitGroup]:
    """The groups --pruning_structure removes units of: Dense layers (neurons) or Conv layers (channels).

    Raises:
      UsageError: the model has none, or their units cannot be removed independently.
    """
    kind = {"neurons": "dense", "channels": "conv"}[structure]
    groups = unit_groups(model, kinds=(kind,))
    if not groups:
        what = "hidden Dense" if kind == "dense" else "Conv"
        raise UsageError(f"--pruning_structure={structure}: model {model.name} has no prunable {what} layers "
                         "whose units could be removed")
    return groups


# Masks ----------------------------------------------------------------------


def _unit_axis_alive(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask).reshape(-1, mask.shape[-1]).any(axis=0) if mask.size else np.zeros(mask.shape[-1], bool)


def kept_units(groups: Sequence[UnitGroup], masks: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """layer -> bool per unit: a unit is kept iff its kernel column/filter has any nonzero mask."""
    return collections.OrderedDict((g.layer, _unit_axis_alive(np.asarray(masks[g.path]) > 0)) for g in groups)


def _row_alive(consumer: Consumer, units_kept: np.ndarray, size: int) -> np.ndarray:
    """Which of a consumer's `size` input rows read a kept unit."""
    if size != units_kept.size * consumer.tile:
        raise ValueError(f"{consumer.path} has {size} inputs on axis {consumer.axis}, expected "
                         f"{units_kept.size} units x {consumer.tile}")
    return units_kept[np.arange(size) % units_kept.size]


def weight_masks(groups: Sequence[UnitGroup], kept: Mapping[str, np.ndarray], like: Masks) -> Masks:
    """`like`'s masks with each group's kernel columns/filters of removed units zeroed, and every
    consumer's input rows of removed units zeroed (tiled through a Flatten); other prunable
    weights (an output layer's own columns) are left as they are in `like` (pass ones for the
    plain structural mask)."""
    result = collections.OrderedDict((name, np.array(mask, np.float32, copy=True)) for name, mask in like.items())
    for group in groups:
        alive = np.asarray(kept[group.layer], bool)
        if alive.shape != (group.units,):
            raise ValueError(f"kept units of {group.layer} have shape {alive.shape}, expected ({group.units},)")
        result[group.path][..., ~alive] = 0.0
        for consumer in group.consumers:
            mask = result[consumer.path]
            rows = _row_alive(consumer, alive, mask.shape[consumer.axis])
            index = [slice(None)] * mask.ndim
            index[consumer.axis] = ~rows
            mask[tuple(index)] = 0.0
    return result


def unit_scores(groups: Sequence[UnitGroup], values: Mapping[str, np.ndarray], current: Masks,
                score: str = "l1", gammas: Optional[Mapping[str, np.ndarray]] = None,
                normalise: bool = False) -> Dict[str, np.ndarray]:
    """layer -> score per unit (higher kept): the L1 norm of the unit's surviving weights (normalise:
    their mean |w|), or |gamma| of its BatchNorm (`gammas` by BatchNorm name)."""
    result = collections.OrderedDict()
    for group in groups:
        if score == "batchnorm":
            if group.batchnorm is None or gammas is None:
                raise UsageError(f"--channel_score=batchnorm: layer {group.layer} has no BatchNorm right after it; "
                                 "use --channel_score=l1")
            result[group.layer] = np.abs(np.asarray(gammas[group.batchnorm], np.float64)).reshape(-1)
            continue
        mask = np.asarray(current[group.path], np.float64)
        weights = np.abs(np.asarray(values[group.path], np.float64) * mask).reshape(-1, group.units)
        total = weights.sum(axis=0)
        if normalise:
            total = total / np.maximum(mask.reshape(-1, group.units).sum(axis=0), 1.0)
        result[group.layer] = total
    return result


def keep_units(units: int, rate: float, level: int) -> int:
    """Units of a group that level `level` keeps: round(units * (1-rate)^level), at least one."""
    return max(1, int(np.floor(units * (1.0 - rate) ** level + 0.5))) if rate > 0 else units


def keep_units_global(units: Sequence[int], rate: float, level: int) -> int:
    """Units a global group of layers (all at `rate`) keeps in total (at least one per layer)."""
    total = sum(units)
    return max(len(units), int(np.floor(total * (1.0 - rate) ** level + 0.5))) if rate > 0 else total


def select_units(groups: Sequence[UnitGroup], scores: Mapping[str, np.ndarray], alive: Mapping[str, np.ndarray],
                 rates: Mapping[str, float], scope: str, level: int) -> Dict[str, np.ndarray]:
    """layer -> kept units at `level`: the highest-scoring surviving units up to the level's count."""
    kept = collections.OrderedDict()
    by_rate = collections.OrderedDict()
    for group in groups:
        key = (rates[group.path],) if scope == "global" else (rates[group.path], group.layer)
        by_rate.setdefault(key, []).append(group)
    for (rate, *_), members in by_rate.items():
        if rate <= 0:
            kept.update((g.layer, np.asarray(alive[g.layer], bool).copy()) for g in members)
            continue
        sizes = [g.units for g in members]
        keep = (keep_units(sizes[0], rate, level) if len(members) == 1
                else keep_units_global(sizes, rate, level))
        flat_alive = np.concatenate([np.asarray(alive[g.layer], bool) for g in members])
        flat = np.concatenate([np.asarray(scores[g.layer], np.float64) for g in members])
        if keep > int(flat_alive.sum()):
            raise ValueError(f"level {level} keeps {keep} units of {[g.layer for g in members]} "
                             f"but only {int(flat_alive.sum())} survive")
        owner = np.repeat(np.arange(len(members)), sizes)
        # Each layer's best surviving unit first (no layer is emptied), then by score; pruned units last.
        best = np.zeros(flat.size, bool)
        if len(members) > 1:
            for i in range(len(members)):
                candidates = np.flatnonzero((owner == i) & flat_alive)
                if candidates.size:
                    best[candidates[np.lexsort((-flat[candidates],))[0]]] = True
        order = np.lexsort((-flat, ~best, ~flat_alive))
        chosen = np.zeros(flat.size, bool)
        chosen[order[:keep]] = True
        for group, piece in zip(members, np.split(chosen, np.cumsum(sizes)[:-1])):
            kept[group.layer] = piece
    return collections.OrderedDict((g.layer, kept[g.layer]) for g in groups)


def structured_masks(groups: Sequence[UnitGroup], values: Mapping[str, np.ndarray], current: Masks,
                     rates: Mapping[str, float], scope: str, level: int, score: str = "l1",
                     gammas: Optional[Mapping[str, np.ndarray]] = None) -> Masks:
    """Level `level`'s weight mask: `current` with the units `select_units` drops removed."""
    scores = unit_scores(groups, values, current, score, gammas, normalise=scope == "global")
    kept = select_units(groups, scores, kept_units(groups, current), rates, scope, level)
    return weight_masks(groups, kept, current)


def random_units(groups: Sequence[UnitGroup], like_kept: Mapping[str, np.ndarray], seed: int) -> Dict[str, np.ndarray]:
    """As many kept units per group as `like_kept`, chosen at random."""
    rng = np.random.default_rng(seed)
    result = collections.OrderedDict()
    for group in groups:
        chosen = np.zeros(group.units, bool)
        chosen[rng.permutation(group.units)[: int(np.count_nonzero(like_kept[group.layer]))]] = True
        result[group.layer] = chosen
    return result


def units_kept_fraction(groups: Sequence[UnitGroup], masks: Mapping[str, np.ndarray]) -> float:
    """The fraction of the groups' units (over all of them) a mask keeps."""
    kept = kept_units(groups, masks)
    total = sum(g.units for g in groups)
    return sum(int(np.count_nonzero(kept[g.layer])) for g in groups) / total if total else 1.0


# N of every M -----------------------------------------------------------------


def keep_of_m(n: int, m: int, rate: float, level: int) -> int:
    """Weights of every M that level `level` keeps: max(N, round(M * (1-rate)^level)); M at level 0."""
    if level == 0 or rate <= 0:
        return m
    return min(m, max(n, int(np.floor(m * (1.0 - rate) ** level + 0.5))))


def _blocks(array: np.ndarray, m: int) -> Tuple[np.ndarray, int]:
    """`array` with its input axis (ndim-2) moved last and padded to blocks of m: (..., blocks, m), pad."""
    moved = np.moveaxis(np.asarray(array), -2, -1)
    size = moved.shape[-1]
    pad = (-size) % m
    return moved, pad


def n_of_m_mask(values: np.ndarray, current: np.ndarray, k: int, m: int) -> np.ndarray:
    """Keeps the k surviving weights of largest |value| in every block of m consecutive weights along
    the input axis (ndim-2) of one kernel (a trailing short block of r keeps min(k, r))."""
    current = np.asarray(current, np.float32)
    if current.ndim < 2 or k >= m:
        return current.copy()
    scores, pad = _blocks(np.abs(np.asarray(values, np.float64)), m)
    alive, _ = _blocks(current > 0, m)
    shape = scores.shape
    width = (shape[-1] + pad) // m
    scores = np.pad(scores, [(0, 0)] * (len(shape) - 1) + [(0, pad)], constant_values=-1.0).reshape(*shape[:-1], width, m)
    alive = np.pad(alive, [(0, 0)] * (len(shape) - 1) + [(0, pad)], constant_values=False).reshape(*shape[:-1], width, m)
    # Rank inside every block: survivors by |value| first, removed (and padding) last; ties by position.
    keyed = np.where(alive, scores, -np.inf)
    order = np.argsort(-keyed, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(m).reshape((1,) * (order.ndim - 1) + (m,)), axis=-1)
    chosen = (ranks < k) & alive
    chosen = chosen.reshape(*shape[:-1], width * m)[..., : shape[-1]]
    return np.moveaxis(chosen.astype(np.float32), -1, -2)


def n_of_m_masks(values: Mapping[str, np.ndarray], current: Masks, rates: Mapping[str, float],
                 n_of_m: Tuple[int, int], level: int, kinds: Optional[Mapping[str, str]] = None) -> Masks:
    """Level `level`'s N-of-M mask of every Dense/Conv kernel (kind 'dense' or 'conv'; output layers
    and other weights keep `current`)."""
    n, m = n_of_m
    result = collections.OrderedDict()
    for path, mask in current.items():
        kind = kinds.get(path) if kinds is not None else "dense"
        if kind in ("dense", "conv") and np.ndim(mask) >= 2:
            result[path] = n_of_m_mask(values[path], mask, keep_of_m(n, m, rates[path], level), m)
        else:
            result[path] = np.array(mask, np.float32, copy=True)
    return result


def random_n_of_m(like: Masks, m: int, seed: int) -> Masks:
    """A mask keeping as many weights of every block of M as `like` does, at random positions in the block."""
    rng = np.random.default_rng(seed)
    result = collections.OrderedDict()
    for path, mask in like.items():
        mask = np.asarray(mask, np.float32)
        if mask.ndim < 2:
            result[path] = mask.copy()
            continue
        counts, pad = _blocks(mask > 0, m)
        shape = counts.shape
        width = (shape[-1] + pad) // m
        alive = np.pad(counts, [(0, 0)] * (len(shape) - 1) + [(0, pad)]).reshape(*shape[:-1], width, m)
        valid = np.pad(np.ones(shape, bool), [(0, 0)] * (len(shape) - 1) + [(0, pad)]).reshape(*shape[:-1], width, m)
        keep = alive.sum(axis=-1, keepdims=True)
        noise = np.where(valid, rng.random(alive.shape), -1.0)
        ranks = np.argsort(np.argsort(-noise, axis=-1, kind="stable"), axis=-1, kind="stable")
        chosen = (ranks < keep).reshape(*shape[:-1], width * m)[..., : shape[-1]]
        result[path] = np.moveaxis(chosen.astype(np.float32), -1, -2)
    return result


def planned_masks(groups: Optional[Sequence[UnitGroup]], shapes: Mapping[str, tuple], rates: Mapping[str, float],
                  pruning, level: int, kinds: Mapping[str, str]) -> Optional[Masks]:
    """A mask with level `level`'s weight counts under `pruning`'s structure (which units or weights
    it keeps is the scores' business, the counts are not); None for global structured scope, where
    only the total number of units is fixed."""
    ones = collections.OrderedDict((p, np.ones(shape, np.float32)) for p, shape in shapes.items())
    if pruning.pruning_structure == "n_of_m":
        return n_of_m_masks(ones, ones, rates, tuple(pruning.n_of_m), level, kinds)
    if pruning.pruning_scope == "global" and level > 0:
        return None
    kept = collections.OrderedDict()
    for g in groups:
        alive = np.zeros(g.units, bool)
        alive[: keep_units(g.units, rates[g.path], level)] = True
        kept[g.layer] = alive
    return weight_masks(groups, kept, ones)


def planned_units(groups: Sequence[UnitGroup], rates: Mapping[str, float], scope: str, level: int) -> Dict[str, int]:
    """Units kept at `level` per group (layerwise) or per set of groups sharing a rate ('units@0.2', global)."""
    if scope == "layerwise":
        return collections.OrderedDict((g.layer, keep_units(g.units, rates[g.path], level)) for g in groups)
    by_rate = collections.OrderedDict()
    for g in groups:
        by_rate.setdefault(rates[g.path], []).append(g)
    return collections.OrderedDict((f"units@{rate:g}",
                                    keep_units_global([g.units for g in members], rate, level))
                                   for rate, members in by_rate.items())


# On disk --------------------------------------------------------------------


def structure_file(root: str) -> str:
    return os.path.join(root, STRUCTURE_FILE)


def groups_to_json(groups: Sequence[UnitGroup]) -> list:
    return [{"layer": g.layer, "path": g.path, "units": g.units, "bias": g.bias, "batchnorm": g.batchnorm,
             "kind": g.kind, "consumers": [dataclasses.asdict(c) for c in g.consumers]} for g in groups]


def groups_from_json(items: list) -> List[UnitGroup]:
    return [UnitGroup(i["layer"], i["path"], int(i["units"]), i.get("bias"), i.get("batchnorm"),
                      tuple(Consumer(c["path"], int(c["axis"]), int(c["tile"])) for c in i["consumers"]),
                      i.get("kind", "dense")) for i in items]


def read_groups(root: str) -> Optional[List[UnitGroup]]:
    """The groups an experiment's structure.json records (None where it has none)."""
    path = structure_file(root)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return groups_from_json(json.load(f)["groups"])
