"""What a report shows of an experiment folder: the per-level summaries and curves.

Reads through the experiment reader (results.csv, metrics.csv, config.json,
flags.cfg): no TensorFlow, so a report can be built while the experiment is still
training, from whatever has finished, and it lists what has not.
"""

import dataclasses
import math
import os
from typing import Dict, List, Optional, Tuple

from tf_lottery.config import VARIANTS
from tf_lottery.errors import UsageError
from tf_lottery.experiment import reader, results, selection
from tf_lottery.experiment.paths import ExperimentPaths
# Settings that say where or how a run was shown, not what it computed: never
# the difference worth naming between two overlaid experiments.
NOT_A_DIFFERENCE = {
    "output_dir", "experiment_name", "data_dir", "download", "progress", "dry_run", "strategy",
    "checkpoint_every", "eval_batch_size", "deterministic", "levels", "replicates", "controls",
}


ReportError = UsageError  # what build_report raises for a folder that is not an experiment


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation, min and max of one metric over replicates."""

    mean: float
    std: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: List[float]) -> Optional["Summary"]:
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return None
        mean = sum(values) / len(values)
        # Sample (n-1) deviation: the replicates estimate the spread of new seeds.
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        return cls(mean, std, min(values), max(values), len(values))


@dataclasses.dataclass
class Experiment:
    """One experiment folder: its settings, finished rows and unfinished runs."""

    directory: str
    config: Dict
    flags_lines: List[str]
    rows: List[Dict]
    in_progress: List[Tuple[int, int, str, int]]  # replicate, level, variant, last logged iteration
    label: str = ""

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.directory))

    @property
    def paths(self) -> ExperimentPaths:
        return ExperimentPaths(self.directory)

    @property
    def oneshot(self) -> bool:
        return self.config.get("prune_mode") == "oneshot"

    @property
    def planned_variants(self) -> Tuple[str, ...]:
        return ("imp",) + tuple(v for v in VARIANTS[1:] if v in (self.config.get("controls") or ()))

    @property
    def planned_levels(self) -> int:
        return int(self.config.get("levels") or 0)

    @property
    def planned_replicates(self) -> int:
        return int(self.config.get("replicates") or 1)

    def variants(self) -> List[str]:
        """Variants with at least one finished row, in the canonical order."""
        present = {r["variant"] for r in self.rows}
        return [v for v in VARIANTS if v in present]

    def variant_label(self, variant: str, with_experiment: bool = True) -> str:
        """'imp', 'oneshot imp', or '<what differs>: imp' when experiments are overlaid."""
        named = with_experiment and self.label
        name = f"oneshot {variant}" if self.oneshot and not (named and "prune_mode" in self.label) else variant
        return f"{self.label}: {name}" if named else name

    def missing_runs(self) -> List[Tuple[int, int, str]]:
        """(replicate, level, variant) planned by config.json but without a finished row."""
        done = {(r["replicate"], r["level"], r["variant"]) for r in self.rows}
        missing = []
        for replicate in range(self.planned_replicates):
            for level in range(self.planned_levels + 1):
                for variant in self.planned_variants if level else ("imp",):
                    if (replicate, level, variant) not in done:
                        missing.append((replicate, level, variant))
        return missing


def load_experiment(directory: str) -> Experiment:
    """Reads one experiment folder; raises reader.NotAnExperiment (a UsageError) if it is not one."""
    experiment = reader.Experiment.open(directory)
    in_progress = [(r, level, name, i) for r, level, name, i in experiment.unfinished_runs() if "/" not in name]
    return Experiment(directory, experiment.stored_config, experiment.flags, experiment.table(), in_progress)


def _format_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def label_experiments(experiments: List[Experiment]):
    """Names each experiment by the settings in which it differs from the others.

    One experiment needs no name (its lines are named by variant alone); several
    that differ in nothing that changes results fall back to their folder names.
    """
    if len(experiments) < 2:
        return
    keys = sorted(set().union(*(e.config for e in experiments)) - NOT_A_DIFFERENCE)
    differing = [k for k in keys if len({_format_value(e.config.get(k)) for e in experiments}) > 1]
    for experiment in experiments:
        if differing:
            experiment.label = ", ".join(f"{k}={_format_value(experiment.config.get(k))}" for k in differing)
        else:
            experiment.label = experiment.name


def level_densities(experiment: Experiment) -> Dict[int, float]:
    """{level: density} of the ticket at every level with a finished row."""
    densities = {}
    for row in experiment.rows:
        densities.setdefault(row["level"], row["density"])
    return dict(sorted(densities.items()))


def summarize(experiment: Experiment, metric: str, variant: str, from_dense: bool = True) -> Dict[int, Summary]:
    """{level: Summary of `metric` over replicates} for one variant.

    Controls have no level 0 of their own: level 0 is the dense run they share with
    the ticket, so with `from_dense` their series starts from the ticket's level 0.
    """
    values: Dict[int, List[float]] = {}
    for row in experiment.rows:
        if row["variant"] == variant or (from_dense and row["level"] == 0 and row["variant"] == "imp"):
            values.setdefault(row["level"], []).append(row.get(metric, math.nan))
    summaries = {level: Summary.of(v) for level, v in sorted(values.items())}
    return {level: s for level, s in summaries.items() if s is not None}


def matching_density(experiment: Experiment, variant: str = "imp",
                     tolerance: float = selection.DEFAULT_TOLERANCE) -> Optional[Tuple[int, float]]:
    """(level, density) of the sparsest level that still matches the dense network.

    The rule is export's "best" level (tf_lottery.experiment.selection.best_level): mean
    early-stop test accuracy at most `tolerance` below level 0's, walking from the
    dense end and stopping at the first level that falls behind. None when level 0
    has not finished or no level of `variant` matches.
    """
    try:
        level = selection.best_level(experiment.rows, tolerance, variant)
    except selection.NoMatchingLevel:
        return None
    return level, level_densities(experiment)[level]


def curves(experiment: Experiment, level: int, variant: str) -> Dict[int, Summary]:
    """{iteration: Summary of test accuracy over replicates} of finished runs."""
    values: Dict[int, List[float]] = {}
    replicates = sorted({r["replicate"] for r in experiment.rows if r["level"] == level and r["variant"] == variant})
    for replicate in replicates:
        path = experiment.paths.run(replicate, level, variant).metrics
        for iteration, value in results.curve(path).items():
            values.setdefault(iteration, []).append(value)
    summaries = {i: Summary.of(v) for i, v in sorted(values.items())}
    return {i: s for i, s in summaries.items() if s is not None}


def nearest_levels(densities: Dict[int, float], targets_percent) -> List[Tuple[float, int]]:
    """(target %, level) for each target, nearest on a log scale, without repeating a level."""
    chosen, used = [], set()
    for target in targets_percent:
        if not densities:
            break
        level = min(densities, key=lambda lv: abs(math.log(densities[lv] * 100 / target)))
        if level not in used:
            used.add(level)
            chosen.append((target, level))
    return chosen
