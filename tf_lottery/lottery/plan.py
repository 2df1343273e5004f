"""The pruning plan of an experiment: prunable weights, their rates and the density at every level.

Building it validates what flag checks alone cannot (model and dataset names,
--prune_layers_ignore) without reading data or training; `--dry_run` prints it,
with a line saying whether the dataset is prepared or can be downloaded.
"""

import dataclasses
from typing import Dict, List, Tuple

from tf_lottery import data, models
from tf_lottery.pruning import constraint, prunable, strategies


@dataclasses.dataclass(frozen=True)
class Plan:
    model_name: str
    dataset: data.DatasetInfo
    weights: Tuple[Tuple[str, str, Tuple[int, ...], int, float], ...]  # path, kind, shape, size, rate
    total_parameters: int
    data_status: str = ""  # the dry run's 'data: ...' line (data.availability); empty outside a dry run

    @property
    def sizes(self) -> Dict[str, int]:
        return {path: size for path, _, _, size, _ in self.weights}

    @property
    def rates(self) -> Dict[str, float]:
        return {path: rate for path, _, _, _, rate in self.weights}

    def densities(self, scope: str, levels: int) -> List[float]:
        """Overall density of the prunable weights at each level 0..levels."""
        total = sum(self.sizes.values())
        return [
            sum(strategies.expected_counts(self.sizes, self.rates, scope, level).values()) / total
            for level in range(levels + 1)
        ]


def model_options(config) -> dict:
    return {"hidden_units": config.model.hidden_units} if config.model.hidden_units else {}


def build_model(config, info: data.DatasetInfo, num_classes: int = None, seed: int = None):
    """The experiment's masked model for a dataset (`num_classes` for another head), seeded when asked."""
    return models.build(config.model.model, info.input_shape, num_classes or info.num_classes, seed=seed,
                        **model_options(config))


def make_plan(config) -> Plan:
    """Validates model, dataset and ignored weights; raises with a one-line message."""
    spec_info = data.describe(config.data.dataset, config.data.data_dir, config.data.class_list())
    models.spec(config.model.model)
    model = build_model(config, spec_info)
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
    return Plan(config.model.model, spec_info, weights, total, status)


def format_plan(plan: Plan, config) -> str:
    scope, levels = config.pruning.pruning_scope, config.pruning.levels
    width = max([24] + [len(path) + 2 for path, *_ in plan.weights])  # resnet paths pass 24 characters
    lines = [
        f"model {plan.model_name} on {plan.dataset.name}"
        f"{f' classes {config.data.classes}' if config.data.classes else ''} (input {plan.dataset.input_shape}, "
        f"{plan.dataset.num_classes} classes): {plan.total_parameters:,} parameters, "
        f"{sum(plan.sizes.values()):,} prunable",
        f"{'weight':<{width}}{'kind':<10}{'shape':<22}{'size':>12}{'rate':>8}",
    ]
    for path, kind, shape, size, rate in plan.weights:
        lines.append(f"{path:<{width}}{kind:<10}{str(shape):<22}{size:>12,}{rate:>8.3f}")
    lines.append(f"{config.pruning.prune_mode} {scope} pruning, {levels} levels; variants: {', '.join(config.variants)}")
    lines.append(f"{'level':>5}{'density':>10}{'remaining':>12}")
    total = sum(plan.sizes.values())
    for level, density in enumerate(plan.densities(scope, levels)):
        lines.append(f"{level:>5}{density:>10.2%}{round(density * total):>12,}")
    if plan.data_status:
        lines.append(plan.data_status)
    return "\n".join(lines)
