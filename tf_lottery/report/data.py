"""What a report shows of an experiment folder: the per-level summaries and curves.

Reads through the experiment reader (results.csv, metrics.csv, config.json,
flags.cfg, branches/stability.csv): no TensorFlow, so a report can be built while
the experiment is still training, from whatever has finished, and it lists what
has not.
"""

import collections
import csv
import dataclasses
import math
import os
from typing import Dict, List, Optional, Tuple

from tf_lottery.config import VARIANTS
from tf_lottery.errors import UsageError
from tf_lottery.experiment import reader, results, selection
from tf_lottery.experiment.paths import ExperimentPaths, interpolation_file, stability_part

# Settings that say where or how a run was shown, not what it computed: never
# the difference worth naming between two overlaid experiments.
NOT_A_DIFFERENCE = {
    "output_dir", "experiment_name", "data_dir", "download", "progress", "dry_run", "strategy",
    "checkpoint_every", "eval_batch_size", "deterministic", "levels", "replicates", "controls",
}


ReportError = UsageError  # what build_report raises for a folder that is not an experiment
STABILITY = "stability"  # the branch whose table and curves the stability figures and section show
PAIRS = ("data", "init")  # the stability branch's --pair values, in the order the report shows them
DEFAULT_STABLE_THRESHOLD = 0.02  # the branch's --stable_threshold default, for a table without the column


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
    stability: List[Dict] = dataclasses.field(default_factory=list)  # the shown setting's rows of branches/stability.csv
    stability_hashes: Dict[str, int] = dataclasses.field(default_factory=dict)  # rows per branch_hash in that table

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
    stability, hashes = select_stability(experiment.branch_table(STABILITY))
    return Experiment(directory, experiment.stored_config, experiment.flags, experiment.table(), in_progress,
                      stability=stability, stability_hashes=hashes)


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


# Stability (branches/stability.csv and the curves beside its runs) ---------------


def _flag(value) -> bool:
    """A True/False cell, whether the table reader typed it or left it text."""
    return value if isinstance(value, bool) else str(value).strip().lower() == "true"


def select_stability(table: List[Dict]) -> Tuple[List[Dict], Dict[str, int]]:
    """(the rows of the branch_hash with the most rows, {branch_hash: row count}) of the stability table.

    A hash is one training setting of the branch (the parent flags it overrides); the
    report shows one, so that its levels, ks and replicates compare like with like
    (a tie goes to the alphabetically first hash). Counts become ints, stable and
    matching booleans, and endpoint_test_accuracy (1 - endpoint_test_error) is added.
    """
    counts = collections.Counter(row["branch_hash"] for row in table)
    if not counts:
        return [], {}
    chosen = max(sorted(counts), key=lambda h: counts[h])
    rows = [{**row, **{c: int(row[c]) for c in ("replicate", "level", "rewind_iteration")},
             "stable": _flag(row["stable"]), "matching": _flag(row["matching"]),
             "endpoint_test_accuracy": 1.0 - results.number(row.get("endpoint_test_error"))}
            for row in table if row["branch_hash"] == chosen]
    return rows, dict(counts.most_common())


def stability_select(experiment: Experiment, **equal) -> List[Dict]:
    """The shown stability rows whose columns equal `equal` (e.g. variant="imp", rewind_iteration=0)."""
    return [row for row in experiment.stability if all(row.get(c) == v for c, v in equal.items())]


def stability_parts(experiment: Experiment) -> List[Tuple[str, str]]:
    """(variant, pair) measured, in the canonical variant order, data orders before initialisations."""
    present = {(row["variant"], row["pair"]) for row in experiment.stability}
    order = list(VARIANTS) + sorted({v for v, _ in present} - set(VARIANTS))
    return sorted(present, key=lambda p: (PAIRS.index(p[1]) if p[1] in PAIRS else len(PAIRS), order.index(p[0])))


def rewind_iterations(experiment: Experiment, **equal) -> List[int]:
    """The rewind iterations k measured among the stability rows equal to `equal`."""
    return sorted({row["rewind_iteration"] for row in stability_select(experiment, **equal)})


def stability_levels(experiment: Experiment, **equal) -> Dict[int, float]:
    """{level: density} of the stability rows equal to `equal`."""
    densities = {}
    for row in stability_select(experiment, **equal):
        densities.setdefault(row["level"], row["density"])
    return dict(sorted(densities.items()))


def stability_summary(experiment: Experiment, metric: str, by: str, **equal) -> Dict[int, Summary]:
    """{value of column `by` (level or rewind_iteration): Summary of `metric` over replicates}
    of the stability rows equal to `equal`."""
    values: Dict[int, List[float]] = {}
    for row in stability_select(experiment, **equal):
        values.setdefault(row[by], []).append(results.number(row.get(metric)))
    summaries = {key: Summary.of(v) for key, v in sorted(values.items())}
    return {key: s for key, s in summaries.items() if s is not None}


def stability_count(experiment: Experiment, column: str, **equal) -> Tuple[int, int]:
    """(rows where boolean `column` is true, rows) among the stability rows equal to `equal`."""
    rows = stability_select(experiment, **equal)
    return sum(1 for row in rows if row[column]), len(rows)


def _all_replicates(experiment: Experiment, columns: Tuple[str, ...], **equal) -> bool:
    rows = stability_select(experiment, **equal)
    return bool(rows) and all(row[c] for row in rows for c in columns)


def earliest_stable_k(experiment: Experiment, variant: str, pair: str) -> Optional[int]:
    """The smallest k at which every replicate is stable at every level measured for the
    variant and pair (at any k); a k not yet measured at one of them does not count."""
    levels = stability_levels(experiment, variant=variant, pair=pair)
    for k in rewind_iterations(experiment, variant=variant, pair=pair):
        if all(_all_replicates(experiment, ("stable",), variant=variant, pair=pair, rewind_iteration=k, level=level)
               for level in levels):
            return k
    return None


def sparsest_stable_matching(experiment: Experiment, variant: str, pair: str) -> Optional[Tuple[int, float, List[int]]]:
    """(level, density, the ks where it holds) of the sparsest level stable and matching in every
    replicate at some k; None when no level is."""
    found = None
    for level, density in stability_levels(experiment, variant=variant, pair=pair).items():
        ks = [k for k in rewind_iterations(experiment, variant=variant, pair=pair, level=level)
              if _all_replicates(experiment, ("stable", "matching"), variant=variant, pair=pair,
                                 rewind_iteration=k, level=level)]
        if ks and (found is None or density < found[1]):
            found = (level, density, ks)
    return found


def stability_settings(experiment: Experiment, column: str) -> List:
    """The distinct values of a setting column (interpolation_points, batchnorm, ...) in the shown rows."""
    values = {row.get(column) for row in experiment.stability}
    return sorted(v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)))


def stable_threshold(experiment: Experiment) -> float:
    """The most common --stable_threshold of the shown rows (the branch's default without one)."""
    values = [results.number(row.get("stable_threshold")) for row in experiment.stability]
    counts = collections.Counter(v for v in values if math.isfinite(v))
    return counts.most_common(1)[0][0] if counts else DEFAULT_STABLE_THRESHOLD


def interpolation_path(experiment: Experiment, row: Dict) -> str:
    """The curve of one stability row: interpolation_<variant>_<pair>_k<k>.csv in its branch folder."""
    folder = experiment.paths.branch(row["replicate"], row["level"], STABILITY, row["branch_hash"]).directory
    return interpolation_file(folder, stability_part(row["variant"], row["pair"], row["rewind_iteration"]))


def interpolation_curve(path: str, split: str = "test") -> Dict[float, float]:
    """{alpha: error} of one split of an interpolation csv (alpha, split, error, loss); {} if absent."""
    try:
        with open(path, newline="") as f:
            return {round(float(r["alpha"]), 6): float(r["error"]) for r in csv.DictReader(f) if r["split"] == split}
    except FileNotFoundError:
        return {}


def interpolation_curves(experiment: Experiment, level: int, variant: str, pair: str, k: int,
                         split: str = "test") -> Dict[float, Summary]:
    """{alpha: Summary of the error over replicates} along the line between a pair's copies."""
    values: Dict[float, List[float]] = {}
    for row in stability_select(experiment, level=level, variant=variant, pair=pair, rewind_iteration=k):
        for alpha, error in interpolation_curve(interpolation_path(experiment, row), split).items():
            values.setdefault(alpha, []).append(error)
    summaries = {alpha: Summary.of(v) for alpha, v in sorted(values.items())}
    return {alpha: s for alpha, s in summaries.items() if s is not None}


def spread_levels(densities: Dict[int, float], count: int) -> List[int]:
    """At most `count` levels spread evenly on a log scale from the densest to the sparsest
    (so level 0, when there, is one of them)."""
    if len(densities) <= count:
        return sorted(densities)
    high, low = max(densities.values()) * 100, min(densities.values()) * 100
    targets = [high * (low / high) ** (i / (count - 1)) for i in range(count)]
    return sorted(level for _, level in nearest_levels(densities, targets))
