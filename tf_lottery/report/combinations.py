"""Tickets combined and tickets extended: the combine and franken branches' figures and sections.

combine (branches/combine.csv): each combination (an ensemble of n tickets, a soup of N
copies, the union or intersection of two tickets' masks) against the parameter budget
it spends, beside the experiment's own tickets at every density: the fair comparison
for an ensemble is the single ticket holding as many weights as all its members.

franken (branches/franken.csv): per setting (head, pruning of the new tasks, the tasks)
and per level of task A's ticket, each task's test accuracy in the Frankenmodel beside
its two baselines (a dense network and a network with only the weights the task got,
each trained on that task alone), and the share of the weights each task owns.
"""

import collections
import math
from typing import Dict, List, Optional, Tuple

from tf_lottery.report import data

Row = Dict[str, object]
COMBINE, FRANKEN = "combine", "franken"
FIGURES = ("combine_accuracy_vs_budget", "franken_tasks")
HOW_ORDER = ("ensemble", "average", "union", "intersection")
ZOOM_BELOW = 1.5  # percentage points below the worst single ticket that the combine figure shows
BASELINES = (("franken", "Frankenmodel"), ("dense_alone", "dense, this task alone"),
             ("same_budget_alone", "same weights, this task alone"))


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _summary(rows: List[Row], column: str) -> Optional[data.Summary]:
    """Mean, spread and count of a numeric column over rows (empty cells skipped)."""
    return data.Summary.of([_number(r.get(column)) for r in rows])


def _spread(summaries: List[data.Summary]) -> List[List[float]]:
    """Error bars (percent) from each mean down to the lowest and up to the highest replicate (never
    negative: the mean of equal values may round past them)."""
    return [[max(0.0, (s.mean - s.low) * 100) for s in summaries], [max(0.0, (s.high - s.mean) * 100) for s in summaries]]


def _text(value) -> str:
    """A table cell as text; an empty cell (read as None or NaN) as ''."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def combine_rows(experiment: data.Experiment) -> List[Row]:
    return experiment.branches.get(COMBINE, [])


def franken_rows(experiment: data.Experiment) -> List[Row]:
    return experiment.branches.get(FRANKEN, [])


def has_combinations(experiments: List[data.Experiment]) -> Tuple[bool, bool]:
    """(any combine rows, any franken rows) among the experiments."""
    return (any(combine_rows(e) for e in experiments), any(franken_rows(e) for e in experiments))


# combine ----------------------------------------------------------------------

def combination_label(how: str, size: int) -> str:
    return {"ensemble": f"ensemble of {size} tickets (logits averaged)",
            "average": f"soup: weights of {size} copies averaged",
            "union": "union of 2 tickets' masks, retrained",
            "intersection": "intersection of 2 tickets' masks, retrained"}.get(how, f"{how} ({size})")


def budget(row: Row) -> float:
    """The weights a combination spends (fraction of one network): an ensemble all its members',
    the others their own network's."""
    return _number(row.get("budget_density")) if row.get("how") == "ensemble" else _number(row.get("density"))


def combinations(experiment: data.Experiment) -> Dict[Tuple[str, int], Dict[int, List[Row]]]:
    """{(how, size): {level: rows over replicates}}, in HOW_ORDER then size; an ensemble whose members
    another row already holds (every replicate's ensemble of n out of n replicates) counted once."""
    found = collections.defaultdict(lambda: collections.defaultdict(list))
    seen = set()
    for row in combine_rows(experiment):
        members = frozenset(_text(row.get("runs")).split(";")) if row.get("how") == "ensemble" else None
        if members and _text(row.get("runs")):  # replicates r, r+1, ... of n = all replicates: one ensemble
            if (row["branch_hash"], row["level"], members) in seen:
                continue
            seen.add((row["branch_hash"], row["level"], members))
        found[(str(row.get("how")), int(_number(row.get("size"))))][int(row["level"])].append(row)
    order = sorted(found, key=lambda k: (HOW_ORDER.index(k[0]) if k[0] in HOW_ORDER else len(HOW_ORDER), k[1]))
    return {k: dict(sorted(found[k].items())) for k in order}


def ticket_levels(experiment: data.Experiment) -> Dict[int, Tuple[data.Summary, data.Summary]]:
    """{level: (density, final test accuracy)} of the experiment's IMP tickets over replicates."""
    by_level = collections.defaultdict(list)
    for row in experiment.rows:
        if row["variant"] == "imp":
            by_level[int(row["level"])].append(row)
    return {level: (_summary(rows, "density"),
                    _summary(rows, "final_test_accuracy"))
            for level, rows in sorted(by_level.items())}


def beats_budget(rows: List[Row]) -> Tuple[int, int]:
    """(replicates where the combination's accuracy beats the single ticket nearest its budget, rows)."""
    measured = [r for r in rows if math.isfinite(_number(r.get("nearest_test_accuracy")))]
    return sum(_number(r["test_accuracy"]) > _number(r["nearest_test_accuracy"]) for r in measured), len(measured)


def combine_figure(experiments: List[data.Experiment], output_dir: str) -> Optional[List[str]]:
    """Test accuracy against the weights spent (% of one network), a panel per experiment."""
    from tf_lottery.report import figures  # pylint: disable=import-outside-toplevel  (matplotlib on demand)
    shown = [e for e in experiments if combine_rows(e)]
    if not shown:
        return None
    figure, axes = figures.plt.subplots(1, len(shown), figsize=(8.5 * len(shown), 5.2), squeeze=False)
    for axis, experiment in zip(axes[0], shown):
        tickets = ticket_levels(experiment)
        x = [d.mean * 100 for d, _ in tickets.values()]
        axis.plot(x, [a.mean * 100 for _, a in tickets.values()], color="black", marker="o", markersize=4,
                  label="single ticket (IMP), by its density")
        percents, means = list(x), [a.mean * 100 for _, a in tickets.values()]
        floor = min(means) - ZOOM_BELOW if means else 0.0  # zoom on the tickets; far worse points sit on the edge
        below = []
        for index, ((how, size), levels) in enumerate(combinations(experiment).items()):
            color = figures.plt.get_cmap("tab10")(index % 10)
            points = [(data.Summary.of([budget(r) for r in rows]),
                       _summary(rows, "test_accuracy")) for rows in levels.values()]
            points = sorted((p for p in points if p[0] and p[1]), key=lambda p: p[0].mean)
            px = [b.mean * 100 for b, _ in points]
            axis.errorbar(px, [a.mean * 100 for _, a in points],
                          yerr=_spread([a for _, a in points]),
                          color=color, marker="s^Dv*"[index % 5], markersize=5, capsize=2, linestyle="--",
                          label=combination_label(how, size))
            percents += px
            below += [(p, a.mean * 100, color) for p, (_, a) in zip(px, points) if a.mean * 100 < floor]
        # ticked at the tickets' densities (and the budgets of dense ensembles, past 100%); every point in view
        ticks = sorted({round(p, 6) for p in x} | {round(p, 6) for p in percents if p > 100.5}) or sorted(set(percents))
        figures._density_axis(axis, ticks)  # pylint: disable=protected-access
        axis.set_xlim(max(percents) * 1.08, min(percents) * 0.9)
        axis.set_xlabel("weights spent (% of one network's; an ensemble counts all its members')")
        axis.set_ylabel("test accuracy (%)")
        if means:
            axis.set_ylim(max(floor, 0), min(max(means) + 1.0, 100))
            for p, value, color in below:  # off the zoomed axis: a mark on its lower edge with the value
                axis.annotate(f"{value:.1f}", xy=(p, floor), xytext=(0, 8), textcoords="offset points", ha="center",
                              fontsize=7, color=color, arrowprops={"arrowstyle": "->", "color": color})
        axis.set_title(f"Tickets combined: {experiment.name}")
        axis.legend(fontsize=8, loc="lower left")
        axis.grid(True, alpha=0.3)
    figure.tight_layout()
    return figures._save(figure, output_dir, FIGURES[0])  # pylint: disable=protected-access


def combine_section(experiment: data.Experiment) -> List[tuple]:
    from tf_lottery.report import documents  # pylint: disable=import-outside-toplevel
    blocks = [("heading", 3, "Tickets combined (branch combine)"),
              ("paragraph", "Each combination's test accuracy (mean ± std over replicates) against the weights it "
                            "spends: an ensemble counts all its members' weights, and its fair comparison is the "
                            "experiment's single ticket nearest that budget (same replicate). `beats` counts the "
                            "replicates where the combination is more accurate than that ticket. An ensemble of as "
                            "many members as there are replicates exists once, and counts once.")]
    header = ["combination", "level", "weights spent (%)", "test accuracy (%)", "members / sources (%)",
              "single ticket at that budget (%)", "beats", "overlap"]
    table = []
    for (how, size), levels in combinations(experiment).items():
        for level, rows in levels.items():
            wins, count = beats_budget(rows)
            overlap = _summary(rows, "overlap")
            table.append([combination_label(how, size), str(level),
                          f"{data.Summary.of([budget(r) for r in rows]).mean * 100:.2f}",
                          documents.format_summary(_summary(rows, "test_accuracy"), "accuracy"),
                          documents.format_summary(_summary(rows, "member_accuracy_mean"),
                                                   "accuracy"),
                          documents.format_summary(_summary(rows, "nearest_test_accuracy"),
                                                   "accuracy"),
                          f"{wins}/{count}", f"{overlap.mean:.3f}" if overlap else ""])
    blocks.append(("table", header, table))
    return blocks


# franken ----------------------------------------------------------------------

def franken_settings(experiment: data.Experiment) -> Dict[str, List[Row]]:
    """{setting label: rows} by branch_hash (and head), each setting one Frankenmodel recipe."""
    found = collections.defaultdict(list)
    for row in franken_rows(experiment):
        found[franken_label(row)].append(row)
    return dict(found)


def franken_label(row: Row) -> str:
    tasks = ", ".join(t for t in _text(row.get("tasks")).split(",") if t)
    head = _text(row.get("head")) or "separate"
    prune = _number(row.get("prune_b"))
    text = f"{head} head" + (f", new tasks pruned by {prune:g}" if prune > 0 else "")
    return (f"tasks {tasks}; " if tasks else "") + text + f" [{row.get('branch_hash')}]"


def _final(rows: List[Row]) -> List[Row]:
    """Each cell's rows measured in its last Frankenmodel (a chain measures earlier tasks again)."""
    last = collections.defaultdict(int)
    for row in rows:
        key = (row["replicate"], row["level"], row["variant"])
        last[key] = max(last[key], int(_number(row.get("after_task"))))
    return [r for r in rows if int(_number(r.get("after_task"))) == last[(r["replicate"], r["level"], r["variant"])]]


def task_table(rows: List[Row]) -> Dict[Tuple[int, str], Dict[int, Dict[str, List[Row]]]]:
    """{(task, task name): {level: {run: rows over replicates}}}: each task in the last Frankenmodel, its
    baselines as measured when it trained (a chain does not train them again)."""
    found = collections.defaultdict(lambda: collections.defaultdict(lambda: collections.defaultdict(list)))
    last = {id(r) for r in _final(rows)}
    for row in rows:
        task = int(_number(row["task"]))
        shown = id(row) in last if row["run"] == "franken" else int(_number(row.get("after_task"))) == task
        if shown:
            found[(task, str(row.get("task_name")))][int(row["level"])][str(row["run"])].append(row)
    return {k: dict(sorted(v.items())) for k, v in sorted(found.items())}


def _accuracy(rows: List[Row]) -> Optional[data.Summary]:
    return _summary(rows, "test_accuracy")


def franken_figure(experiments: List[data.Experiment], output_dir: str) -> Optional[List[str]]:
    """A row per Frankenmodel setting: a panel per new task (its accuracy and its baselines against
    task A's weights), and the share of the weights each task owns."""
    from tf_lottery.report import figures  # pylint: disable=import-outside-toplevel
    grid = [(e, label, rows) for e in experiments for label, rows in franken_settings(e).items()]
    if not grid:
        return None
    width = max(len(task_table(rows)) for _, _, rows in grid) + 1
    figure, axes = figures.plt.subplots(len(grid), width, figsize=(5.2 * width, 4.3 * len(grid)), squeeze=False)
    for axes_row, (experiment, label, rows) in zip(axes, grid):
        tasks = task_table(rows)
        a_density = {level: _summary(runs.get("franken", []), "density").mean
                     for (task, _), levels in tasks.items() if task == 0 for level, runs in levels.items()}
        levels = sorted(a_density)
        for axis, ((task, name), by_level) in zip(axes_row, tasks.items()):
            for index, (run, title) in enumerate(BASELINES if task else BASELINES[:1]):
                points = [(a_density[lv] * 100, _accuracy(by_level[lv].get(run, []))) for lv in levels if lv in by_level]
                points = [(x, s) for x, s in points if s]
                if points:
                    axis.errorbar([x for x, _ in points], [s.mean * 100 for _, s in points],
                                  yerr=_spread([s for _, s in points]),
                                  marker="os^"[index], markersize=5, capsize=2, label=title if task else "task A's ticket")
            figures._density_axis(axis, [a_density[lv] * 100 for lv in levels])  # pylint: disable=protected-access
            axis.set_xlabel("task A's weights (% remaining)")
            axis.set_ylabel("test accuracy on the task (%)")
            axis.set_title(f"task {task}: {name}", fontsize=10)
            axis.legend(fontsize=7)
            axis.grid(True, alpha=0.3)
        ownership = axes_row[-1]
        bottom = [0.0] * len(levels)
        for (task, name), by_level in tasks.items():
            shares = []
            for lv in levels:
                owners = by_level.get(lv, {}).get("franken", [])
                shares.append(data.Summary.of([_owned_share(r, rows) for r in owners]).mean * 100 if owners else 0.0)
            ownership.bar(range(len(levels)), shares, bottom=bottom, label=f"task {task}: {name}")
            bottom = [b + s for b, s in zip(bottom, shares)]
        ownership.bar(range(len(levels)), [max(0.0, 100 - b) for b in bottom], bottom=bottom, color="lightgrey",
                      label="free (no task's)")
        ownership.set_xticks(range(len(levels)), [f"level {lv}\n({a_density[lv] * 100:.3g}%)" for lv in levels],
                             fontsize=8)
        ownership.set_ylabel("prunable weights owned (% of the network's)")
        ownership.set_ylim(0, 100)
        ownership.set_title("who owns the weights", fontsize=10)
        ownership.legend(fontsize=7)
        for unused in axes_row[len(tasks):-1]:
            unused.set_visible(False)
        axes_row[0].annotate(f"{experiment.name}: {label}", xy=(0, 1.12), xycoords="axes fraction", fontsize=10)
    figure.tight_layout()
    return figures._save(figure, output_dir, FIGURES[1])  # pylint: disable=protected-access


def _owned_share(row: Row, rows: List[Row]) -> float:
    """A task's owned weights as a fraction of the network's prunable weights: those of a dense network of
    the architecture (a dense_alone baseline's), or every task's together where the heads add more."""
    key = (row["replicate"], row["level"], row["variant"], row["branch_hash"])
    cell = [r for r in rows if (r["replicate"], r["level"], r["variant"], r["branch_hash"]) == key]
    owned = sum(_number(r["owned_weights"]) for r in _final(cell) if r["run"] == "franken")
    dense = [_number(r["owned_weights"]) for r in cell if r["run"] == "dense_alone"]
    total = max([owned] + dense)
    return _number(row["owned_weights"]) / total if total else math.nan


def franken_section(experiment: data.Experiment) -> List[tuple]:
    from tf_lottery.report import documents  # pylint: disable=import-outside-toplevel
    blocks = [("heading", 3, "Frankenmodels (branch franken)"),
              ("paragraph", "Task A's ticket frozen, each later task trained in the weights the earlier ones left "
                            "free. Per task: its test accuracy in the last Frankenmodel (its own output columns, its "
                            "own and earlier tasks' weights), the same task trained alone on a dense network and "
                            "on exactly the weights it got, and the weights it owns (mean ± std over replicates). "
                            "Task A's row says in how many replicates its logits stayed bit-identical to the "
                            "parent's ticket.")]
    for label, rows in franken_settings(experiment).items():
        blocks.append(("paragraph", f"**{label}**"))
        header = ["task", "level", "Frankenmodel (%)", "dense, alone (%)", "same weights, alone (%)",
                  "weights owned", "task A unchanged"]
        table = []
        for (task, name), by_level in task_table(rows).items():
            for level, runs in by_level.items():
                own = runs.get("franken", [])
                identical = [data.is_true(r.get("bit_identical")) for r in own] if task == 0 else []
                owned = _summary(own, "owned_weights")
                table.append([f"{task}: {name}", str(level),
                              documents.format_summary(_accuracy(own), "accuracy"),
                              documents.format_summary(_accuracy(runs.get("dense_alone", [])), "accuracy"),
                              documents.format_summary(_accuracy(runs.get("same_budget_alone", [])), "accuracy"),
                              f"{owned.mean:,.0f}" if owned else "",
                              f"{sum(identical)}/{len(identical)} bit-identical" if identical else ""])
        blocks.append(("table", header, table))
        joint = _summary(_final(rows), "joint_test_accuracy")
        if joint:
            blocks.append(("paragraph", "Shared head, every class at once (the union of the tasks' test sets): "
                                        f"{documents.format_summary(joint, 'accuracy')}%."))
    return blocks


CAPTIONS = {
    FIGURES[0]: "Tickets combined (branch combine): test accuracy of ensembles, weight averages (soups) and mask "
                "unions/intersections against the weights they spend, beside the experiment's single tickets "
                "(mean, bars: min-max over replicates).",
    FIGURES[1]: "Frankenmodels (branch franken): each task's test accuracy against task A's density, in the "
                "Frankenmodel and trained alone (dense, and on exactly the weights it got), and the share of the "
                "weights each task owns.",
}


def draw(experiments: List[data.Experiment], output_dir: str) -> Dict[str, Optional[List[str]]]:
    combined, franken = has_combinations(experiments)
    written = {}
    if combined:
        written[FIGURES[0]] = combine_figure(experiments, output_dir)
    if franken:
        written[FIGURES[1]] = franken_figure(experiments, output_dir)
    return written


def section(experiment: data.Experiment) -> List[tuple]:
    return (combine_section(experiment) if combine_rows(experiment) else []) + \
        (franken_section(experiment) if franken_rows(experiment) else [])
