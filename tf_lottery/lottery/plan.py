"""The pruning plan of an experiment: prunable weights, their rates and the density at every level.

Building it validates what flag checks alone cannot (model and dataset names,
--prune_layers_ignore) without reading data or training; `--dry_run` prints it,
with a line saying whether the dataset is prepared or can be downloaded.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

from tf_lottery import data, models
from tf_lottery.errors import UsageError
from tf_lottery.pruning import constraint, prunable, strategies, structure
from tf_lottery.training.loop import batchnorm_gammas


@dataclasses.dataclass(frozen=True)
class Plan:
    model_name: str
    dataset: data.DatasetInfo
    weights: Tuple[Tuple[str, str, Tuple[int, ...], int, float], ...]  # path, kind, shape, size, rate
    total_parameters: int
    data_status: str = ""  # the dry run's 'data: ...' line (data.availability); empty outside a dry run
    structure: str = "unstructured"  # --pruning_structure
    groups: Tuple[Tuple[str, str, int, float], ...] = ()  # neurons/channels: layer, kind, units, rate
    # Structured levels 0..levels: (remaining weights or None where the scores decide it (global), {group: units}).
    structured_levels: Tuple[Tuple[Optional[int], Dict[str, int]], ...] = ()

    @property
    def sizes(self) -> Dict[str, int]:
        return {path: size for path, _, _, size, _ in self.weights}

    @property
    def rates(self) -> Dict[str, float]:
        return {path: rate for path, _, _, _, rate in self.weights}

    def densities(self, scope: str, levels: int) -> List[float]:
        """Overall density of the prunable weights at each level 0..levels (structured global levels:
        None, their weights depend on which units the scores keep)."""
        total = sum(self.sizes.values())
        if self.structured_levels:
            return [None if remaining is None else remaining / total
                    for remaining, _ in self.structured_levels[: levels + 1]]
        return [
            sum(strategies.expected_counts(self.sizes, self.rates, scope, level).values()) / total
            for level in range(levels + 1)
        ]


def model_options(config) -> dict:
    return config.model.options()


def build_model(config, info: data.DatasetInfo, num_classes: int = None, seed: int = None):
    """The experiment's masked model for a dataset (`num_classes` for another head), seeded when asked."""
    return models.build(config.model.model, info.input_shape, num_classes or info.num_classes, seed=seed,
                        **model_options(config))


def _check_task(model, config, info):
    """A language model gives logits at every position; a classifier or a policy one row per example."""
    per_position = len(model.output_shape) == 3
    if (info.task == "language_model") != per_position:
        wanted = ("next-character logits at every position, e.g. lstm_lm or transformer_lm"
                  if info.task == "language_model" else "one row of logits per example")
        raise UsageError(f"--model: {config.model.model} does not fit {info.name} ({info.task.replace('_', ' ')}): "
                          f"it needs {wanted}")


def make_plan(config) -> Plan:
    """Validates model, dataset and ignored weights; raises with a one-line message."""
    spec_info = data.for_config(config.data, read=False)
    models.spec(config.model.model)
    try:
        model = build_model(config, spec_info)
    except ValueError as error:  # e.g. an LSTM given images
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UsageError(f"--model: {config.model.model} cannot be built for {spec_info.name} "
                         f"(input {spec_info.input_shape}, {spec_info.task.replace('_', ' ')}): {first}") from None
    _check_task(model, config, spec_info)
    rates = strategies.weight_rates(model, config.pruning)
    kinds = strategies.weight_kinds(model)
    weights = tuple(
        (w.path, kinds[w.path], tuple(w.variable.shape), int(w.variable.shape.num_elements()), rates[w.path])
        for w in prunable.prunable_weights(model)
    )
    total = sum(int(v.shape.num_elements()) for v in constraint.model_weights(model))
    # A real run checks the data when it loads it (and stops there in one line if it cannot);
    # a dry run, which reads none, only says where it stands.
    status = (data.availability(config.data.dataset, config.data.data_dir, config.data.download)
              if config.run.dry_run else "")
    return Plan(config.model.model, spec_info, weights, total, status, config.pruning.pruning_structure,
                *_structure_plan(model, config, rates, kinds))


def _structure_plan(model, config, rates, kinds):
    """(groups, structured levels) of --pruning_structure, validated against the model in one line."""
    pruning = config.pruning
    if config.training.bn_l1 > 0 and not batchnorm_gammas(model):
        raise UsageError(f"--bn_l1: model {config.model.model} has no BatchNorm scales to penalise")
    if pruning.pruning_structure == "unstructured":
        return (), ()
    shapes = {w.path: tuple(w.variable.shape) for w in prunable.prunable_weights(model)}
    groups = None
    if pruning.structured():
        groups = structure.structure_groups(model, pruning.pruning_structure)
        if pruning.channel_score == "batchnorm":
            structure.unit_scores(groups, {}, {}, "batchnorm", strategies.batchnorm_gammas(model))  # refuses a group without one
    levels = []
    for level in range(pruning.levels + 1):
        planned = structure.planned_masks(groups, shapes, rates, pruning, level, kinds)
        remaining = None if planned is None else sum(int(m.sum()) for m in planned.values())
        units = structure.planned_units(groups, rates, pruning.pruning_scope, level) if groups else {}
        levels.append((remaining, units))
    described = tuple((g.layer, g.kind, g.units, rates[g.path]) for g in groups or ())
    return described, tuple(levels)


def _structure_lines(plan: Plan, config) -> List[str]:
    """What --pruning_structure removes: the unit groups, or the N-of-M pattern."""
    pruning = config.pruning
    if plan.structure == "n_of_m":
        n, m = pruning.n_of_m
        return [f"structure n_of_m: level L keeps max({n}, round({m}*(1-p)^L)) of every {m} consecutive input "
                f"weights of each Dense/Conv unit (output layers unpruned)"]
    if not plan.groups:
        return []
    unit = "neurons" if plan.structure == "neurons" else "channels"
    lines = [f"structure {plan.structure}: whole {unit} scored by "
             f"{'|gamma| of their BatchNorm' if pruning.channel_score == 'batchnorm' else 'the L1 norm of their weights'}"
             f"; level L keeps max(1, round(units*(1-p)^L)) "
             f"{'of each layer' if pruning.pruning_scope == 'layerwise' else 'of the layers sharing a rate, ranked together'}"
             "; units kept per level below"]
    lines.extend(f"  {layer:<22}{kind:<8}{units:>6,} units{rate:>8.3f}" for layer, kind, units, rate in plan.groups)
    return lines


def format_plan(plan: Plan, config) -> str:
    scope, levels = config.pruning.pruning_scope, config.pruning.levels
    width = max([24] + [len(path) + 2 for path, *_ in plan.weights])  # resnet paths pass 24 characters
    outputs = {"language_model": "characters in the vocabulary", "reinforcement": "actions"}.get(
        plan.dataset.task, "classes")
    lines = [
        f"model {plan.model_name} on {plan.dataset.name}"
        f"{f' classes {config.data.classes}' if config.data.classes else ''} (input {plan.dataset.input_shape}, "
        f"{plan.dataset.num_classes} {outputs}): {plan.total_parameters:,} parameters, "
        f"{sum(plan.sizes.values()):,} prunable",
        f"{'weight':<{width}}{'kind':<10}{'shape':<22}{'size':>12}{'rate':>8}",
    ]
    for path, kind, shape, size, rate in plan.weights:
        lines.append(f"{path:<{width}}{kind:<10}{str(shape):<22}{size:>12,}{rate:>8.3f}")
    lines.append(f"{config.pruning.prune_mode} {scope} pruning, {levels} levels; variants: {', '.join(config.variants)}")
    lines.extend(_structure_lines(plan, config))
    units = [u for _, u in plan.structured_levels] if plan.groups else []
    unit_names = list(units[0]) if units else []
    lines.append(f"{'level':>5}{'density':>10}{'remaining':>12}" + "".join(f"{n:>14}" for n in unit_names))
    total = sum(plan.sizes.values())
    for level, density in enumerate(plan.densities(scope, levels)):
        kept = "".join(f"{units[level][n]:>14,}" for n in unit_names) if units else ""
        if density is None:
            lines.append(f"{level:>5}{'scores':>10}{'decide':>12}" + kept)
        else:
            lines.append(f"{level:>5}{density:>10.2%}{round(density * total):>12,}" + kept)
    if plan.data_status:
        lines.append(plan.data_status)
    return "\n".join(lines)
