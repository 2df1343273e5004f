"""Every way of producing a sparse network on two axes: accuracy against density, and
accuracy against the training it cost (iterations_spent). Accuracy is the experiments'
task's metric (measures): bits per character for language models, return for policies.

A method is a series of networks, one per level (density) and replicate: the IMP
loop's variants of each experiment (so experiments overlaid with other --retrain
modes or --early_bird are methods too) and the rows of the branches that produce
networks of their own (METHOD_BRANCHES). The figures draw each series' mean with
a band from the lowest to the highest replicate; the section tabulates mean ± std.
"""

import dataclasses
import math
from typing import Callable, Dict, List, Optional

from tf_lottery.report import data, measures

Row = Dict[str, object]


GMP_STARTS = {"trained": "from trained weights", "init": "from θ0"}
PDT_THEN = {"keep": "kept", "reset": "reset", "rewind": "rewound"}


def _gmp_label(row: Row, parent: Dict) -> Optional[str]:
    """'gradual magnitude pruning (tfmot), from trained weights' (--start=trained) or '…, from θ0'."""
    start = row.get("start")
    name = "gradual magnitude pruning (tfmot)"
    return f"{name}, {GMP_STARTS.get(start, start)}" if start not in (None, "") else name


def _pdt_label(row: Row, parent: Dict) -> Optional[str]:
    """'pruning during training (magnitude|movement, kept|reset|rewound)': the pruning run kept
    (then=keep) or its retraining from θ0/θk (then=reset/rewind); the pruning run's row of a
    retraining part is not a network of its own (None)."""
    then = row.get("then")
    if str(row.get("run", "")).endswith("_pruning") and then not in (None, "", "keep"):
        return None
    return f"pruning during training ({row.get('criterion')}, {PDT_THEN.get(then, then)})"


def _retrain_label(row: Row, parent: Dict) -> Optional[str]:
    """'Early-Bird ticket retrained' when the parent experiment ran --early_bird, else 'ticket retrained'."""
    return "Early-Bird ticket retrained" if data.is_true(parent.get("early_bird", False)) else "ticket retrained"


REINIT_INITS = {"fresh": "random reinitialisation (branch)", "reshuffle": "survivors reshuffled",
                "signed_reinit": "reinitialised, signs kept", "signed_constant": "signed constant (α·sign θ)",
                "constant": "constant α, random signs"}


def _reinit_label(row: Row, parent: Dict) -> Optional[str]:
    """What the ticket's survivors started from: 'signed constant (α·sign θ)', ... (reinit --init)."""
    init = row.get("init") or "fresh"
    return REINIT_INITS.get(init, f"reinit ({init})")


def _pai_label(row: Row, parent: Dict) -> Optional[str]:
    """'pruning at init: snip' or 'pruning at init: snip, invert' (pai --method, --ablation)."""
    ablation = row.get("ablation") or "none"
    return f"pruning at init: {row.get('method')}" + ("" if ablation == "none" else f", {ablation}")


SUPERMASK_WEIGHTS = {"init": "θ0", "signed_constant": "signed constant"}


def _supermask_label(row: Row, parent: Dict) -> Optional[str]:
    """'untrained supermask (large_final_same_sign, signed constant)' or 'learned supermask (θ0)'."""
    weights = SUPERMASK_WEIGHTS.get(row.get("weights") or "init", row.get("weights"))
    if row.get("run") == "learned":
        return f"learned supermask ({weights})"
    return f"untrained supermask ({row.get('supermask_criterion') or 'large_final_same_sign'}, {weights})"


def _as_network(branch: str, row: Row) -> Row:
    """The row as a point of the figures: a learned supermask sits at its own mask's density."""
    if branch == "supermask" and row.get("run") == "learned" and math.isfinite(_number(row.get("mask_density"))):
        return {**row, "density": row["mask_density"]}
    return row


# branch: the readable name of the method a row is, from the row and the parent's config.json
# (None: a row that is not a finished network).
METHOD_BRANCHES: Dict[str, Callable[[Row, Dict], Optional[str]]] = {
    "gmp": _gmp_label,
    "pai": _pai_label,
    "prune_during_training": _pdt_label,
    "reinit": _reinit_label,
    "retrain_ticket": _retrain_label,
    "supermask": _supermask_label,
}
assert set(METHOD_BRANCHES) == set(data.METHOD_BRANCHES)
METRICS = ("final_test_accuracy", "early_stop_test_accuracy", "iterations_spent", "density")  # classification's


def _metrics(measure: measures.Measure):
    """What a Method summarises: the task's final and early-stop test metric, the cost and the density."""
    return (measure.final, measure.early_stop, "iterations_spent", "density")


@dataclasses.dataclass
class Method:
    """One series: {level: {metric: Summary over replicates}}."""

    label: str
    levels: Dict[int, Dict[str, data.Summary]]


def _series(label: str, rows: List[Row], metrics=METRICS) -> Method:
    by_level: Dict[int, List[Row]] = {}
    for row in rows:
        by_level.setdefault(int(row["level"]), []).append(row)
    levels = {}
    for level, group in sorted(by_level.items()):
        summaries = {m: data.Summary.of([_number(r.get(m)) for r in group]) for m in metrics}
        levels[level] = {m: s for m, s in summaries.items() if s is not None}
    return Method(label, levels)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def methods(experiments: List[data.Experiment]) -> List[Method]:
    """Every method with a finished network in the experiments, in a stable order."""
    metrics = _metrics(measures.common(experiments))
    found = []
    for experiment in experiments:
        for variant in experiment.variants():
            rows = [r for r in experiment.rows if r["variant"] == variant]
            found.append(_series(experiment.legend_label(variant), rows, metrics))
        prefix = f"{experiment.label}: " if experiment.label else ""
        for branch, label_of in METHOD_BRANCHES.items():
            groups: Dict[str, Dict[str, List[Row]]] = {}  # name -> branch hash -> rows
            for row in experiment.branches.get(branch, []):
                label = label_of(row, experiment.config)
                if label is not None:
                    name = prefix + label
                    groups.setdefault(name, {}).setdefault(str(row.get("branch_hash")), []).append(
                        _as_network(branch, row))
            for name, by_hash in groups.items():
                # settings beyond the label (other options, overrides): the hash tells them apart
                found += [_series(name + (f" [{h}]" if len(by_hash) > 1 else ""), rows, metrics)
                          for h, rows in by_hash.items()]
    return [m for m in found if m.levels]


def has_methods(experiments: List[data.Experiment]) -> bool:
    """Whether there is more than the IMP loop's own variants to compare (a method branch ran,
    or experiments are overlaid)."""
    return len(experiments) > 1 or any(experiment.branches.get(b) for experiment in experiments for b in METHOD_BRANCHES)


# Figures ---------------------------------------------------------------------

FIGURES = ("methods_accuracy_vs_density", "methods_accuracy_vs_cost")
def panels(measure: measures.Measure):
    """(column, title) of the density figure's two panels: the final and the early-stop test metric."""
    return ((measure.final, f"final {measure.noun}"), (measure.early_stop, f"{measure.noun} at early stop"))


def _points(method: Method, x_metric: str, y_metric: str):
    points = [(v[x_metric], v[y_metric]) for v in method.levels.values() if x_metric in v and y_metric in v]
    return sorted(points, key=lambda p: p[0].mean)


def _draw(axis, method: Method, index: int, x_metric: str, y_metric: str, x_scale: float, y_scale: float = 100.0):
    from tf_lottery.report import figures  # pylint: disable=import-outside-toplevel  (matplotlib on demand)
    points = _points(method, x_metric, y_metric)
    if not points:
        return False
    color = figures.plt.get_cmap("tab10")(index % 10)
    line_style, marker = figures.EXPERIMENT_STYLES[(index // 10) % len(figures.EXPERIMENT_STYLES)]
    x = [p[0].mean * x_scale for p in points]
    axis.plot(x, [p[1].mean * y_scale for p in points], linestyle=line_style, marker=marker, markersize=4, color=color,
              label=method.label)
    axis.fill_between(x, [p[1].low * y_scale for p in points], [p[1].high * y_scale for p in points], color=color,
                      alpha=0.12, linewidth=0)
    return True


def _y_label(measure: measures.Measure, title: str) -> str:
    return f"{title} (%)" if measure.task.percent else title


def _y_limits(axis, found: List[Method], metric: str, measure: measures.Measure = measures.CLASSIFICATION):
    """Zoom on the networks worth comparing: from a little below the worst mean above 90% (accuracies
    only: another metric's axis takes matplotlib's limits)."""
    if not measure.task.percent:
        return
    means = [v[metric].mean * 100 for m in found for v in m.levels.values() if metric in v]
    good = [m for m in means if m >= 90.0] or means
    if good:
        axis.set_ylim(min(good) - 0.5, max(means) + 0.3)


def _legend_below(figure, axis, count: int):
    """The methods' long names under the axes, in two columns: beside them they would squeeze the plot."""
    handles, labels = axis.get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                  ncol=2 if count > 3 else 1, frameon=False)


def accuracy_vs_density_figure(experiments: List[data.Experiment], output_dir: str) -> Optional[List[str]]:
    from tf_lottery.report import figures  # pylint: disable=import-outside-toplevel
    found = methods(experiments)
    if not found:
        return None
    measure = measures.common(experiments)
    figure, axes = figures.plt.subplots(1, 2, figsize=(13, 4.8), sharey=False)
    percents = [v["density"].mean * 100 for m in found for v in m.levels.values() if "density" in v]
    for axis, (metric, title) in zip(axes, panels(measure)):
        for index, method in enumerate(found):
            _draw(axis, method, index, "density", metric, 100.0, measure.scale)
        figures._density_axis(axis, sorted(set(percents)))  # pylint: disable=protected-access
        _y_limits(axis, found, metric, measure)
        axis.set_ylabel(_y_label(measure, title))
        axis.set_title(f"Every method: {title}")
    _legend_below(figure, axes[0], len(found))
    return figures._save(figure, output_dir, FIGURES[0])  # pylint: disable=protected-access


def accuracy_vs_cost_figure(experiments: List[data.Experiment], output_dir: str) -> Optional[List[str]]:
    from tf_lottery.report import figures  # pylint: disable=import-outside-toplevel
    found = [m for m in methods(experiments) if any("iterations_spent" in v for v in m.levels.values())]
    if not found:
        return None
    measure = measures.common(experiments)
    figure, axis = figures.plt.subplots(figsize=(8.5, 4.8))
    for index, method in enumerate(found):
        _draw(axis, method, index, "iterations_spent", measure.final, 1.0, measure.scale)
    axis.set_xscale("log")
    axis.set_xlabel("training iterations spent to produce the network (iterations_spent)")
    _y_limits(axis, found, measure.final, measure)
    axis.set_ylabel(_y_label(measure, f"final {measure.noun}"))
    axis.set_title(f"{measure.short} against training cost")
    axis.grid(True, which="major", alpha=0.3)
    _legend_below(figure, axis, len(found))
    return figures._save(figure, output_dir, FIGURES[1])  # pylint: disable=protected-access


CAPTIONS = {
    "methods_accuracy_vs_density": "Every method that produced networks (the IMP loop's variants of each experiment "
                                   "and the branches that train or find networks: gmp, pai, prune_during_training, "
                                   "reinit, retrain_ticket, supermask; a learned supermask at its own mask's density) "
                                   "against percent of weights remaining: final test accuracy and test accuracy at early stop (mean, "
                                   "band: min-max over replicates).",
    "methods_accuracy_vs_cost": "Final test accuracy against the training iterations it took to produce each network "
                                "(iterations_spent: its own run and the runs its mask needed), a point per level.",
}


def captions(measure: measures.Measure) -> Dict[str, str]:
    """CAPTIONS in the words of `measure`'s metric (CAPTIONS themselves for classification)."""
    if measure.classification:
        return CAPTIONS
    noun = measure.noun
    return {name: text.replace("final test accuracy and test accuracy at early stop",
                               f"final {noun} and {noun} at early stop")
            .replace("Final test accuracy", f"Final {noun}") for name, text in CAPTIONS.items()}


# Section ---------------------------------------------------------------------

def section(experiments: List[data.Experiment]) -> List[tuple]:
    """The Methods section: per method and level, density, accuracy and cost."""
    from tf_lottery.report import documents  # pylint: disable=import-outside-toplevel
    measure = measures.common(experiments)
    noun = measure.noun
    blocks = [("heading", 2, "Methods"),
              ("paragraph", f"Every way these experiments produced a sparse network, at each level: density, final "
                            f"{noun} and {noun} at early stop (mean ± sample standard deviation over "
                            "replicates) and `iterations_spent`, the training iterations that network cost (its own "
                            "run plus the runs its mask needed; mean over replicates).")]
    header = ["method", "level", "density (%)"] + [_y_label(measure, title) for _, title in panels(measure)] + [
        "iterations_spent", "replicates"]
    rows = []
    for method in methods(experiments):
        for level, values in method.levels.items():
            count = max((s.count for s in values.values()), default=0)
            cost = values.get("iterations_spent")
            rows.append([method.label, str(level),
                         f"{values['density'].mean * 100:.2f}" if "density" in values else "",
                         documents.format_summary(values.get(measure.final), measure.kind),
                         documents.format_summary(values.get(measure.early_stop), measure.kind),
                         f"{cost.mean:,.0f}" if cost else "", str(count)])
    blocks.append(("table", header, rows))
    return blocks
