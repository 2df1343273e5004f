"""What a report shows of an experiment folder: the per-level summaries and curves.

Reads through the experiment reader (results.csv, metrics.csv, config.json,
flags.cfg, branches/stability.csv, branches/transfer.csv and the experiment a
transfer compares with): no TensorFlow, so a report can be built while the
experiment is still training, from whatever has finished, and it lists what has
not.
"""

import collections
import csv
import dataclasses
import math
import os
from typing import Dict, List, Optional, Tuple

from tf_lottery import config as config_lib
from tf_lottery import tasks
from tf_lottery.config import VARIANTS
from tf_lottery.errors import Error, UsageError
from tf_lottery.experiment import reader, results, selection
from tf_lottery.experiment.paths import ExperimentPaths, interpolation_file, stability_part
from tf_lottery.report import measures

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
TRANSFER = "transfer"  # the branch whose table the transfer figure and section show
METHOD_BRANCHES = ("gmp", "pai", "prune_during_training", "reinit", "retrain_ticket", "supermask")  # branches whose rows are networks (report.methods)
COMBINATION_BRANCHES = ("combine", "franken")  # tickets combined and extended (report.combinations)
TRANSFER_MODES = ("ticket", "mask_only", "random_ticket")  # the transfer branch's --modes, in the order shown
COMPARE_DENSITY_TOLERANCE = 0.01  # relative: a compare_with level this close in density is "the same density"


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
    transfer: List["TransferSetting"] = dataclasses.field(default_factory=list)  # branches/transfer.csv by setting
    branches: Dict[str, List[Dict]] = dataclasses.field(default_factory=dict)  # METHOD_BRANCHES' and COMBINATION_BRANCHES' tables
    task: tasks.Task = tasks.TASKS[tasks.CLASSIFICATION]  # what it trains and measures (dataset.json's task)

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

    def variant_name(self, variant: str) -> str:
        """What a reader of the papers calls a variant: 'winning ticket (IMP, reset to θ0)', 'random
        reinitialisation', 'random pruning' (see variant_name)."""
        return variant_name(self.config, variant)

    def legend_label(self, variant: str, with_experiment: bool = True) -> str:
        """The figures' name of a variant: variant_name, prefixed '<what differs>: ' when overlaid."""
        name = self.variant_name(variant)
        return f"{self.label}: {name}" if with_experiment and self.label else name

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


CONTROL_NAMES = {"reinit": "random reinitialisation", "random_prune": "random pruning"}


def variant_name(config: Dict, variant: str) -> str:
    """The readable name of a variant of an experiment with settings `config` (config.json's flat values).

    imp is the winning ticket, named by how it was found and how it retrains: 'winning ticket (IMP, reset
    to θ0)', '… rewound to θ20' (--rewind_iteration=20), '… lr_rewind' / '… finetune' (--retrain, 'from
    iteration k' with a rewind iteration), 'one-shot' for --prune_mode=oneshot and 'Early-Bird ticket'
    with --early_bird, 'IMP by movement' for another --mask_criterion. The controls are 'random reinitialisation' and 'random pruning'.
    """
    if variant != "imp":
        return CONTROL_NAMES.get(variant, variant)
    k = int(config.get("rewind_iteration") or 0)
    retrain = config.get("retrain") or "reset"
    if retrain == "reset":
        how = f"rewound to θ{k}" if k else "reset to θ0"
    else:
        how = retrain + (f" from iteration {k}" if k else "")
    search = "one-shot" if config.get("prune_mode") == "oneshot" else "IMP"
    criterion = config.get("mask_criterion") or "large_final"
    if criterion != "large_final":  # the mask was not chosen by magnitude: say by what
        search += f" by {criterion}"
    ticket = "Early-Bird ticket" if is_true(config.get("early_bird", False)) else "winning ticket"
    return f"{ticket} ({search}, {how})"


def load_experiment(directory: str) -> Experiment:
    """Reads one experiment folder; raises reader.NotAnExperiment (a UsageError) if it is not one."""
    experiment = reader.Experiment.open(directory)
    in_progress = [(r, level, name, i) for r, level, name, i in experiment.unfinished_runs() if "/" not in name]
    stability, hashes = select_stability(experiment.branch_table(STABILITY))
    transfer = transfer_settings(experiment.branch_table(TRANSFER), experiment.stored_config)
    return Experiment(directory, experiment.stored_config, experiment.flags, _table_with_costs(experiment), in_progress,
                      stability=stability, stability_hashes=hashes, transfer=transfer,
                      branches={b: experiment.branch_table(b) for b in METHOD_BRANCHES + COMBINATION_BRANCHES},
                      task=tasks.of(experiment.dataset))


def _table_with_costs(experiment: reader.Experiment) -> List[Dict]:
    """results.csv's rows, with the costs the reader computes where the table was written before it
    had them (by a process started before iterations_spent existed)."""
    rows = experiment.table()
    if rows and "iterations_spent" not in rows[0]:
        costs = {(r["replicate"], r["level"], r["variant"]): r for r in experiment.rows()}
        for row in rows:
            cost = costs.get((row["replicate"], row["level"], row["variant"]), {})
            row.update({k: cost.get(k) for k in ("iterations_trained", "iterations_spent")})
    return rows


def _format_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def label_experiments(experiments: List[Experiment]):
    """Names each experiment by the settings in which it differs from the others.

    A setting an experiment's config.json lacks (it was written before the setting
    existed) counts at its default, which reproduces what it did. Each experiment is
    named by those of the differing settings it holds at other than their defaults;
    one that holds them all at their defaults by the differing settings with text
    values (retrain=reset), else the first. One experiment needs no name (its lines are
    named by variant alone); several that differ in nothing that changes results fall
    back to their folder names.
    """
    if len(experiments) < 2:
        return
    defaults = {f.name: f.default for kind in config_lib.SECTIONS.values() for f in dataclasses.fields(kind)}

    def value(experiment: Experiment, key: str) -> str:
        return _format_value(experiment.config.get(key, defaults.get(key)))

    keys = sorted(set().union(*(e.config for e in experiments)) - NOT_A_DIFFERENCE)
    differing = [k for k in keys if len({value(e, k) for e in experiments}) > 1]
    for experiment in experiments:
        if not differing:
            experiment.label = experiment.name
            continue
        named = [k for k in differing if k in defaults and value(experiment, k) != _format_value(defaults[k])]
        named = (named or [k for k in differing if isinstance(defaults.get(k), str)] or differing[:1])
        experiment.label = ", ".join(f"{k}={value(experiment, k)}" for k in named)


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
    summaries = {level: Summary.of(v) for level, v in level_values(experiment, metric, variant, from_dense).items()}
    return {level: s for level, s in summaries.items() if s is not None}


def level_values(experiment: Experiment, metric: str, variant: str, from_dense: bool = True) -> Dict[int, List]:
    """{level: the replicates' values of `metric`} for one variant (NaN where a row lacks it), level 0
    from the dense ticket run with `from_dense`, as in summarize."""
    values: Dict[int, List] = {}
    for row in experiment.rows:
        if row["variant"] == variant or (from_dense and row["level"] == 0 and row["variant"] == "imp"):
            values.setdefault(row["level"], []).append(row.get(metric, math.nan))
    return dict(sorted(values.items()))


def level_means(rows, variant: str, column: str = selection.METRIC) -> Dict[int, Tuple[float, float]]:
    """{level: (mean density, mean `column`)} over the rows of `variant` (selection.level_means):
    rows without a finite value are left out."""
    return selection.level_means(rows, variant, metric=column)


def matching_density(experiment: Experiment, variant: str = "imp",
                     tolerance: Optional[float] = None) -> Optional[Tuple[int, float]]:
    """(level, density) of the sparsest level that still matches the dense network.

    The rule is export's "best" level (tf_lottery.experiment.selection.best_level): for classification,
    mean early-stop test accuracy at most `tolerance` below level 0's, walking from the dense end
    and stopping at the first level that falls behind. Other tasks walk the same way on their
    metric in its direction (tasks.Task.worse): a language model's level matches while its
    mean early-stop test bits per character is at most `tolerance` above level 0's, a policy's
    while its test return is at least level 0's minus `tolerance`. `tolerance` defaults to the
    task's (measures). None when level 0 has not finished or no level of `variant` matches.
    """
    measure = measures.of(experiment)
    tolerance = measure.tolerance if tolerance is None else tolerance
    try:
        level = selection.best_level(experiment.rows, tolerance, variant, task=measure.task)
    except selection.NoMatchingLevel:
        return None
    return level, level_densities(experiment)[level]


def is_censored(row: Dict, budget=None) -> bool:
    """Whether a run's early-stop iteration is the last it trained (final_iteration, else `budget`):
    nothing earlier had a lower validation loss, so the iteration is a lower bound, not a measurement."""
    stop = results.number(row.get("early_stop_iteration"))
    final = results.number(row.get("final_iteration"))
    if not (math.isfinite(final) and final > 0):
        final = results.number(budget)
    return math.isfinite(stop) and math.isfinite(final) and stop > 0 and stop >= final


def censored_counts(experiment: Experiment, variant: str, from_dense: bool = True) -> Dict[int, Tuple[int, int]]:
    """{level: (runs whose early-stop iteration is censored, finished runs)} of one variant (with
    `from_dense`, level 0 is the dense ticket run, as in summarize)."""
    counts: Dict[int, List[int]] = {}
    for row in experiment.rows:
        if row["variant"] == variant or (from_dense and row["level"] == 0 and row["variant"] == "imp"):
            count = counts.setdefault(row["level"], [0, 0])
            count[0] += is_censored(row, experiment.config.get("iterations"))
            count[1] += 1
    return {level: (c, n) for level, (c, n) in sorted(counts.items())}


def undertrained_dense(experiment: Experiment) -> Optional[Tuple[int, int, int]]:
    """(censored replicates, finished replicates, the iteration they stopped at) of level 0 when its
    early-stop iteration is the end of its training in at least one replicate; None otherwise."""
    dense = [r for r in experiment.rows if r["level"] == 0 and r["variant"] == "imp"]
    censored = [r for r in dense if is_censored(r, experiment.config.get("iterations"))]
    if not censored:
        return None
    return len(censored), len(dense), int(max(results.number(r.get("early_stop_iteration")) for r in censored))


@dataclasses.dataclass(frozen=True)
class Fall:
    """Where a control falls below: its first level more than the tolerance below the dense network
    or the ticket (level None: none of its finished levels does)."""

    variant: str
    level: Optional[int]
    density: Optional[float]
    accuracy: Optional[float]  # the control's mean early-stop test metric there (accuracy for classification)
    dense: float  # level 0's
    ticket: Optional[float]  # the ticket's at that level (None: not finished there)
    below: Tuple[str, ...]  # ("dense network", "ticket"): what it is more than the tolerance below
    sparsest: Optional[Tuple[int, float]]  # (level, density) of the sparsest level walked when it does not fall


def falls_below(experiment: Experiment, variant: str, tolerance: Optional[float] = None) -> Optional[Fall]:
    """Where a control (reinit, random_prune) falls below the winning ticket; None without level 0.

    The rule, on the mean early-stop test metric over replicates (accuracy, selection.METRIC, for
    classification; measures.Measure.early_stop), as the ticket's matching rule: walking from the
    densest pruned level towards the sparsest, the control falls below from the first level at which
    it is more than `tolerance` worse than the dense network (level 0) OR more than `tolerance` worse
    than the ticket (imp) at the same level, i.e. for accuracy below max(dense, ticket there) -
    tolerance, for bits per character above min(dense, ticket there) + tolerance. Comparing with the
    ticket too keeps a control that only keeps up with a weak (under-trained) dense network from
    being said to match. A level that has not finished ends the walk, as in selection.best_level:
    what lies beyond is not yet known. `tolerance` defaults to the task's (measures).
    """
    measure = measures.of(experiment)
    tolerance = measure.tolerance if tolerance is None else tolerance
    ticket = level_means(experiment.rows, "imp", measure.early_stop)
    dense = ticket.get(0)
    if dense is None:
        return None
    means = level_means(experiment.rows, variant, measure.early_stop)
    walked = None
    for level in range(1, max(means, default=0) + 1):
        if level not in means:
            break
        density, accuracy = means[level]
        theirs = ticket[level][1] if level in ticket else None
        below = tuple(name for name, reference in (("dense network", dense[1]), ("ticket", theirs))
                      if reference is not None and measure.worse(accuracy, reference, tolerance))
        if below:
            return Fall(variant, level, density, accuracy, dense[1], theirs, below, walked)
        walked = level, density
    return Fall(variant, None, None, None, dense[1], None, (), walked)


def curves(experiment: Experiment, level: int, variant: str, split: str = "test",
           metric: str = "accuracy") -> Dict[int, Summary]:
    """{iteration: Summary over replicates of one split/metric of metrics.csv} of finished runs."""
    values: Dict[int, List[float]] = {}
    replicates = sorted({r["replicate"] for r in experiment.rows if r["level"] == level and r["variant"] == variant})
    for replicate in replicates:
        path = experiment.paths.run(replicate, level, variant).metrics
        for iteration, value in results.curve(path, split, metric).items():
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


is_true = _flag  # for callers outside this module (a True/False setting or cell)


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


# Transfer (branches/transfer.csv and the compare_with experiment) ------------------


@dataclasses.dataclass
class Comparison:
    """The compare_with experiment of a transfer setting: its own ticket's (imp) rows, or why there are none."""

    directory: str
    rows: List[Dict]  # its imp rows of results.csv
    dataset: str = ""
    problem: str = ""  # one line when it could not be read ('' when it was)


@dataclasses.dataclass
class TransferSetting:
    """The rows of one branch_hash of the transfer table: one target setting of the source experiment."""

    branch_hash: str
    rows: List[Dict]
    description: str  # what differs from the source, e.g. "mnist → fashion_mnist"
    comparison: Optional[Comparison] = None


def _number_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_transfer(row: Dict, source: Dict) -> str:
    """What a transfer row's target setting changes from the source config (config.json's flat values):
    'mnist → fashion_mnist', 'adam → momentum (learning rate 0.01)', '3000 → 600 iterations', ..."""
    changes = []
    if row.get("dataset") != source.get("dataset"):
        changes.append(f"{source.get('dataset')} → {row.get('dataset')}")
    same_rate = results.number(row.get("learning_rate")) == results.number(source.get("learning_rate"))
    if row.get("optimizer") != source.get("optimizer"):
        changes.append(f"{source.get('optimizer')} → {row.get('optimizer')} "
                       f"(learning rate {_number_text(row.get('learning_rate'))})")
    elif not same_rate:
        changes.append(f"learning rate {_number_text(source.get('learning_rate'))} → "
                       f"{_number_text(row.get('learning_rate'))}")
    if results.number(row.get("iterations")) != results.number(source.get("iterations")):
        changes.append(f"{_number_text(source.get('iterations'))} → {_number_text(row.get('iterations'))} iterations")
    if row.get("output_layer") == "rebuilt":
        changes.append("output layer rebuilt" + (" (dense)" if row.get("output_mask") == "dense" else ""))
    return ", ".join(changes) or "the source's own settings"


def load_comparison(directory: str) -> Comparison:
    """The compare_with experiment's imp rows; a Comparison with a one-line `problem` when it cannot be read."""
    try:
        other = reader.Experiment.open(directory)
        rows = [row for row in other.table() if row["variant"] == "imp"]
    except Error as error:  # the reader names the flag it reads for; here the folder is the branch's
        return Comparison(directory, [], problem=error.one_line().replace("--experiment_dir: ", "", 1))
    return Comparison(directory, rows, dataset=other.config.data.dataset)


def transfer_settings(table: List[Dict], source: Dict) -> List[TransferSetting]:
    """The transfer table grouped by branch_hash (in the table's order), each described against the
    source config and with its compare_with experiment read once (its most common non-empty value)."""
    groups: Dict[str, List[Dict]] = {}
    for row in table:
        groups.setdefault(row["branch_hash"], []).append(row)
    settings = []
    for branch_hash, rows in groups.items():
        named = collections.Counter(str(row.get("compare_with") or "") for row in rows if row.get("compare_with"))
        comparison = load_comparison(max(sorted(named), key=lambda p: named[p])) if named else None
        settings.append(TransferSetting(branch_hash, rows, describe_transfer(rows[0], source), comparison))
    return settings


def transfer_series(setting: TransferSetting) -> List[Tuple[str, str]]:
    """(source variant, mode) measured, in the canonical variant order, modes as the branch lists them."""
    present = {(row["variant"], row["mode"]) for row in setting.rows}
    variants = list(VARIANTS) + sorted({v for v, _ in present} - set(VARIANTS))
    modes = list(TRANSFER_MODES) + sorted({m for _, m in present} - set(TRANSFER_MODES))
    return sorted(present, key=lambda p: (variants.index(p[0]), modes.index(p[1])))


def transfer_label(series: List[Tuple[str, str]], variant: str, mode: str) -> str:
    """The mode ('ticket'), prefixed by the source variant ('random_prune ticket') when not all are imp."""
    return mode if all(v == "imp" for v, _ in series) else f"{variant} {mode}"


def transfer_levels(setting: TransferSetting) -> Dict[int, float]:
    """{level: density} of the setting's rows."""
    densities = {}
    for row in setting.rows:
        densities.setdefault(row["level"], row["density"])
    return dict(sorted(densities.items()))


def _summaries(rows: List[Dict], metric: str) -> Dict[int, Summary]:
    values: Dict[int, List[float]] = {}
    for row in rows:
        values.setdefault(row["level"], []).append(results.number(row.get(metric)))
    summaries = {level: Summary.of(v) for level, v in sorted(values.items())}
    return {level: s for level, s in summaries.items() if s is not None}


def transfer_summary(setting: TransferSetting, metric: str, variant: str, mode: str) -> Dict[int, Summary]:
    """{level: Summary of `metric` over replicates} of one source variant and mode."""
    return _summaries([r for r in setting.rows if r["variant"] == variant and r["mode"] == mode], metric)


def compared_levels(setting: TransferSetting) -> Dict[int, int]:
    """{transfer level: the compare experiment's finished imp level within COMPARE_DENSITY_TOLERANCE
    (relative) of its density, the nearest when several}; levels without one are left out."""
    if setting.comparison is None:
        return {}
    theirs = {}
    for row in setting.comparison.rows:
        theirs.setdefault(row["level"], results.number(row["density"]))
    matched = {}
    for level, density in transfer_levels(setting).items():
        close = [lv for lv, d in theirs.items() if abs(d - density) <= COMPARE_DENSITY_TOLERANCE * density]
        if close:
            matched[level] = min(close, key=lambda lv: abs(theirs[lv] - density))
    return matched


def compare_summary(setting: TransferSetting, metric: str) -> Dict[int, Summary]:
    """{transfer level: Summary of `metric` of the compare experiment's own ticket at the same density}."""
    if setting.comparison is None:
        return {}
    theirs = _summaries(setting.comparison.rows, metric)
    return {level: theirs[other] for level, other in compared_levels(setting).items() if other in theirs}


def transfer_dense_reference(setting: TransferSetting) -> Optional[Tuple[float, str]]:
    """(the target's dense final test accuracy, where it comes from): the compare experiment's
    level-0 imp mean, else the setting's level-0 mask_only mean; None without either."""
    if setting.comparison is not None:
        dense = _summaries([r for r in setting.comparison.rows if r["level"] == 0], "final_test_accuracy")
        if 0 in dense:
            return dense[0].mean, "imp level 0 of compare_with"
    own = transfer_summary(setting, "final_test_accuracy", "imp", "mask_only")
    if 0 in own:
        return own[0].mean, "level 0, mask_only"
    return None


def sparsest_within(series: Dict[int, Summary], densities: Dict[int, float], reference: float,
                    tolerance: float) -> Optional[Tuple[int, float]]:
    """(level, density) of the sparsest level reached, walking from the densest, before the first whose
    mean falls more than `tolerance` below `reference` (the report's matching rule); None if the first does."""
    found = None
    for level in sorted((lv for lv in series if lv in densities), key=lambda lv: -densities[lv]):
        if series[level].mean < reference - tolerance:
            break
        found = level, densities[level]
    return found
