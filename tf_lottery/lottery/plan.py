"""The pruning plan of an experiment: prunable layers, their rates and the density at every level.

Building it validates what flag checks alone cannot (model and dataset names,
--prune_layers_ignore) without reading data or training; `--dry_run` prints it.
"""

import dataclasses
from typing import Dict, List, Tuple

from tf_lottery import data, models
from tf_lottery.pruning import constraint, strategies


@dataclasses.dataclass(frozen=True)
class Plan:
    model_name: str
    dataset: data.DatasetInfo
    layers: Tuple[Tuple[str, str, Tuple[int, ...], int, float], ...]  # name, kind, shape, size, rate
    total_parameters: int

    @property
    def sizes(self) -> Dict[str, int]:
        return {name: size for name, _, _, size, _ in self.layers}

    @property
    def rates(self) -> Dict[str, float]:
        return {name: rate for name, _, _, _, rate in self.layers}

    def densities(self, scope: str, levels: int) -> List[float]:
        """Overall density of the prunable weights at each level 0..levels."""
        total = sum(self.sizes.values())
        return [
            sum(strategies.expected_counts(self.sizes, self.rates, scope, level).values()) / total
            for level in range(levels + 1)
        ]


def model_options(config) -> dict:
    return {"hidden_units": config.model.hidden_units} if config.model.hidden_units else {}


def make_plan(config) -> Plan:
    """Validates model, dataset and ignored layers; raises with a one-line message."""
    spec_info = data.describe(config.data.dataset, config.data.data_dir)
    models.spec(config.model.model)
    model = models.build(config.model.model, spec_info.input_shape, spec_info.num_classes, **model_options(config))
    rates = strategies.layer_rates(model, config.pruning)
    kinds = strategies.layer_kinds(model)
    layers = tuple(
        (layer.name, kinds[layer.name], tuple(layer.kernel.shape), int(layer.kernel.shape.num_elements()), rates[layer.name])
        for layer in constraint.prunable_layers(model)
    )
    total = sum(int(v.shape.num_elements()) for v in constraint.model_weights(model))
    return Plan(config.model.model, spec_info, layers, total)


def format_plan(plan: Plan, config) -> str:
    scope, levels = config.pruning.pruning_scope, config.pruning.levels
    lines = [
        f"model {plan.model_name} on {plan.dataset.name} (input {plan.dataset.input_shape}, "
        f"{plan.dataset.num_classes} classes): {plan.total_parameters:,} parameters, "
        f"{sum(plan.sizes.values()):,} prunable",
        f"{'layer':<24}{'kind':<8}{'shape':<22}{'weights':>12}{'rate':>8}",
    ]
    for name, kind, shape, size, rate in plan.layers:
        lines.append(f"{name:<24}{kind:<8}{str(shape):<22}{size:>12,}{rate:>8.3f}")
    lines.append(f"{config.pruning.prune_mode} {scope} pruning, {levels} levels; variants: {', '.join(config.variants)}")
    lines.append(f"{'level':>5}{'density':>10}{'remaining':>12}")
    total = sum(plan.sizes.values())
    for level, density in enumerate(plan.densities(scope, levels)):
        lines.append(f"{level:>5}{density:>10.2%}{round(density * total):>12,}")
    return "\n".join(lines)
