"""The paper's figures (Frankle & Carbin 2019, figures 3 and 4) drawn with matplotlib.

Each figure is written as PNG and SVG. Lines are a mean over replicates with a
shaded band from the minimum to the maximum replicate; the stability figures
(Frankle et al. 2020, instability and linear mode connectivity) and the transfer
figure (Morcos et al. 2019) shade ± one standard deviation instead, as those
papers do.
"""

import os
from typing import Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")  # files only: the report runs on machines without a display
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position
from matplotlib import ticker  # noqa: E402  pylint: disable=wrong-import-position

from tf_lottery.report import combinations, data, measures, methods  # noqa: E402  pylint: disable=wrong-import-position

VARIANT_COLORS = {"imp": "tab:blue", "reinit": "tab:orange", "random_prune": "tab:green"}
# Several experiments share the variant colours and differ in line style, as
# the paper draws one-shot beside iterative pruning.
EXPERIMENT_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1)), "v"), ((0, (1, 1)), "P")]
CURVE_TARGETS = (100.0, 51.3, 21.1, 7.0, 3.6, 1.9)  # percent remaining, the paper's figure 3 levels
MAX_TICK_LABELS = 14  # more densities than this: every other one (or fewer) labelled, the rest unlabelled ticks
TICK_MERGE = 0.03  # relative: densities this close (a method's 50.0% beside the ticket's 50.02%) share a tick
CENSORED_LABEL = "hollow: stopped at its last iteration (≥)"  # the legend's note for censored early stops
FIGURE_FORMATS = ("png", "svg")

# name: (metric, y label, title) of a classification experiment; other tasks draw their own metric
# under the same names (measures.Measure.density_figures).
DENSITY_FIGURES = measures.CLASSIFICATION.density_figures
FIGURES = tuple(DENSITY_FIGURES) + ("training_curves",)
# Drawn only for experiments with a stability table (branches/stability.csv).
STABILITY_FIGURES = ("stability_interpolation", "stability_vs_rewind", "stability_vs_density")
INTERPOLATION_LEVELS = 4  # columns of stability_interpolation: levels spread over the densities
DENSITY_PANELS_PER_ROW = 3  # stability_vs_density: one panel per rewind iteration k, wrapped
# Drawn only for experiments with a transfer table (branches/transfer.csv).
TRANSFER_FIGURES = ("transfer_accuracy",)
TRANSFER_PANELS = (("final_test_accuracy", "at the end of training"), ("early_stop_test_accuracy", "at early stop"))
MODE_COLORS = {"ticket": "tab:blue", "mask_only": "tab:orange", "random_ticket": "tab:green"}
OWN_TICKET_STYLE = {"color": "black", "linestyle": "--", "marker": "s"}  # the compare_with experiment's imp


def _style(index: int):
    return EXPERIMENT_STYLES[index % len(EXPERIMENT_STYLES)]


def density_ticks(level_percents) -> Tuple[List[float], List[float]]:
    """(labelled, unlabelled) ticks of a density axis: the percents that ran, densest first.

    Percents within TICK_MERGE (relative) of a denser one share its tick. Up to MAX_TICK_LABELS
    are all labelled; beyond, every n-th is, counted from the sparsest, and the densest always,
    the others staying as unlabelled ticks so every density that ran is marked.
    """
    ticks: List[float] = []
    for percent in sorted(set(level_percents), reverse=True):
        if not ticks or percent < ticks[-1] * (1 - TICK_MERGE):
            ticks.append(percent)
    if len(ticks) <= MAX_TICK_LABELS:
        return ticks, []
    step = -(-len(ticks) // MAX_TICK_LABELS)
    chosen = set(range(len(ticks) - 1, -1, -step))
    if 0 not in chosen:
        chosen = {i for i in chosen if i >= step} | {0}
    return ([t for i, t in enumerate(ticks) if i in chosen], [t for i, t in enumerate(ticks) if i not in chosen])


def _tick_text(percent: float) -> str:
    return f"{percent:.3g}"


def _density_axis(axis, level_percents: List[float]):
    """A log axis of percent remaining, from 100% on the left, ticked at the densities that ran."""
    lowest_percent = min(level_percents)
    axis.set_xscale("log")
    axis.set_xlim(108, max(lowest_percent * 0.9, 0.1))  # inverted: pruning proceeds to the right
    labelled, unlabelled = density_ticks(level_percents)
    axis.xaxis.set_major_locator(ticker.FixedLocator(labelled))
    axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _tick_text(v)))
    axis.xaxis.set_minor_locator(ticker.FixedLocator(unlabelled))
    axis.xaxis.set_minor_formatter(ticker.NullFormatter())
    axis.set_xlabel("percent of weights remaining")
    axis.grid(True, which="major", alpha=0.3)


def plotted_series(axis) -> Dict[str, Tuple[List[float], List[float]]]:
    """{legend label: (x, y)} of an axis' labelled lines, as drawn (percent where the axis is in percent)."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in axis.get_lines() if not line.get_label().startswith("_")}


def _save(figure, output_dir: str, name: str) -> List[str]:
    paths = []
    for extension in FIGURE_FORMATS:
        path = os.path.join(output_dir, f"{name}.{extension}")
        figure.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    plt.close(figure)
    return paths


PERCENT_METRICS = {"final_test_accuracy", "early_stop_test_accuracy"}  # drawn ×100, in percent


def density_figure(experiments: List[data.Experiment], name: str, output_dir: str) -> Optional[List[str]]:
    """One metric against percent remaining, a line per experiment and variant; None if no data.

    The metric is the experiments' task's (measures: accuracy, bits per character, return);
    accuracies are drawn in percent. In the early-stopping iteration figure a level where a
    replicate stopped at its last iteration (data.is_censored: a lower bound, not a measurement)
    has a hollow marker, explained by a legend entry.
    """
    metric, y_label, title = measures.common(experiments).density_figures[name]
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    figure, axis = plt.subplots(figsize=(7, 4.5))
    percents, drawn, censored_drawn = set(), 0, False
    for index, experiment in enumerate(experiments):
        densities = data.level_densities(experiment)
        line_style, marker = _style(index)
        for variant in experiment.variants():
            series = data.summarize(experiment, metric, variant)
            levels = [lv for lv in series if lv in densities]
            if not levels:
                continue
            x = [densities[lv] * 100 for lv in levels]
            mean = [series[lv].mean * scale for lv in levels]
            color = VARIANT_COLORS.get(variant, "tab:gray")
            censored = set()
            if metric == "early_stop_iteration":
                counts = data.censored_counts(experiment, variant)
                censored = {i for i, lv in enumerate(levels) if counts.get(lv, (0, 0))[0]}
            axis.plot(x, mean, linestyle=line_style, marker=marker, markersize=4, color=color,
                      markevery=[i for i in range(len(levels)) if i not in censored] if censored else None,
                      label=experiment.legend_label(variant))
            if censored:
                axis.plot([x[i] for i in sorted(censored)], [mean[i] for i in sorted(censored)], linestyle="none",
                          marker=marker, markersize=6, color=color, markerfacecolor="white", label="_censored")
                censored_drawn = True
            axis.fill_between(x, [series[lv].low * scale for lv in levels], [series[lv].high * scale for lv in levels],
                              color=color, alpha=0.15, linewidth=0)
            percents.update(x)
            drawn += 1
    if not drawn:
        plt.close(figure)
        return None
    if censored_drawn:  # a legend entry of its own, in grey, for every line's hollow markers
        axis.plot([], [], linestyle="none", marker="o", markersize=6, color="0.35", markerfacecolor="white",
                  label=CENSORED_LABEL)
    _density_axis(axis, sorted(percents))
    axis.set_ylabel(f"{y_label} (%)" if scale == 100.0 else y_label)
    axis.set_title(title)
    if drawn > 4:  # an overlay's long labels would hide the lines: put the legend beside the axes
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axis.legend(fontsize=8, loc="best")
    return _save(figure, output_dir, name)


def training_curves_figure(experiments: List[data.Experiment], output_dir: str) -> Optional[List[str]]:
    """The task's curve (measures.Measure.curve: test accuracy, test bits per character, validation
    return) against iteration for the levels nearest the paper's densities.

    A row per experiment and a column per variant; a colour per level, from dense
    (dark) to sparse (light), so rows and columns compare at a glance.
    """
    grid = [(e, v) for e in experiments for v in e.variants()]
    if not grid:
        return None
    measure = measures.common(experiments)
    split, metric = measure.curve
    scale = measure.scale
    columns = max(len(e.variants()) for e in experiments)
    rows = len(experiments)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False,
                                sharey=True)
    colormap = plt.get_cmap("viridis")
    late_values = []  # means after the first 10% of training, to zoom the shared y axis on them
    for row, experiment in enumerate(experiments):
        densities = data.level_densities(experiment)
        chosen = data.nearest_levels(densities, CURVE_TARGETS)
        for column in range(columns):
            axis = axes[row][column]
            variants = experiment.variants()
            if column >= len(variants):
                axis.set_visible(False)
                continue
            variant = variants[column]
            for rank, (_, level) in enumerate(chosen):
                # A control's own level 0 is the dense ticket run; draw it in every column as the reference.
                source = "imp" if level == 0 else variant
                series = data.curves(experiment, level, source, split, metric)
                if not series:
                    continue
                iterations = list(series)
                late_values += [s.mean * scale for i, s in series.items() if i >= 0.1 * iterations[-1]]
                # Spread over the chosen levels; stop short of viridis' pale yellow end.
                color = colormap(0.9 * rank / max(len(chosen) - 1, 1))
                axis.plot(iterations, [s.mean * scale for s in series.values()], color=color,
                          label=f"{_tick_text(densities[level] * 100)}%")
                axis.fill_between(iterations, [s.low * scale for s in series.values()],
                                  [s.high * scale for s in series.values()], color=color, alpha=0.15, linewidth=0)
            axis.set_title(experiment.legend_label(variant), fontsize=10)
            axis.set_xlabel("training iteration")
            axis.grid(True, alpha=0.3)
            if column == 0:
                axis.set_ylabel(f"{measure.curve_label} (%)" if measure.task.percent else measure.curve_label)
            if axis.get_lines():
                axis.legend(fontsize=7, title="remaining", title_fontsize=7,
                            loc="lower right" if measure.task.higher_is_better else "upper right")
    if late_values:
        # As the paper's figure 3: the first iterations climb from chance and would
        # flatten the differences between levels that matter, so they run off the axis.
        low, high = min(late_values), max(late_values)
        margin = max(0.15 * (high - low), measure.curve_margin)
        axes[0][0].set_ylim(low - margin, min(high + margin, 100.0) if measure.task.percent else high + margin)
    figure.suptitle(measure.curve_title)
    figure.tight_layout()
    return _save(figure, output_dir, "training_curves")


def _band(axis, x, series: List[data.Summary], color, scale: float = 100.0, **style):
    """A mean line with a ± one standard deviation band where there are several replicates."""
    axis.plot(x, [s.mean * scale for s in series], color=color, **style)
    if any(s.count > 1 for s in series):
        axis.fill_between(x, [(s.mean - s.std) * scale for s in series], [(s.mean + s.std) * scale for s in series],
                          color=color, alpha=0.15, linewidth=0)


def _threshold_line(axis, experiments: List[data.Experiment]):
    threshold = data.stable_threshold(next(e for e in experiments if e.stability))
    axis.axhline(threshold * 100, color="0.4", linestyle="--", linewidth=1, label=f"stable below {threshold * 100:g}%")


def _k_colors(ks: List[int]) -> Dict[int, object]:
    colormap = plt.get_cmap("plasma")
    return {k: colormap(0.85 * rank / max(len(ks) - 1, 1)) for rank, k in enumerate(ks)}


def stability_interpolation_figure(experiments: List[data.Experiment], output_dir: str) -> Optional[List[str]]:
    """Test error along the line between the ticket's two copies (two data orders).

    A row per experiment, a column per level (at most INTERPOLATION_LEVELS, spread
    over the densities), a line per rewind iteration k; None without curves.
    """
    grid = [(e, data.spread_levels(data.stability_levels(e, variant="imp", pair="data"), INTERPOLATION_LEVELS))
            for e in experiments]
    grid = [(e, levels) for e, levels in grid if levels]
    if not grid:
        return None
    columns = max(len(levels) for _, levels in grid)
    figure, axes = plt.subplots(len(grid), columns, figsize=(3.6 * columns, 3.2 * len(grid)), squeeze=False,
                                sharey=True)
    colors = _k_colors(sorted({k for e, _ in grid for k in data.rewind_iterations(e, variant="imp", pair="data")}))
    drawn = 0
    for row, (experiment, levels) in enumerate(grid):
        densities = data.stability_levels(experiment, variant="imp", pair="data")
        for column in range(columns):
            axis = axes[row][column]
            if column >= len(levels):
                axis.set_visible(False)
                continue
            level = levels[column]
            for k in data.rewind_iterations(experiment, variant="imp", pair="data", level=level):
                series = data.interpolation_curves(experiment, level, "imp", "data", k)
                if series:
                    _band(axis, list(series), list(series.values()), colors[k], marker="o", markersize=3,
                          label=f"k = {k}")
                    drawn += 1
            axis.set_title(f"{experiment.variant_label('imp', with_experiment=False)}, "
                           f"{densities[level] * 100:.1f}% (level {level})", fontsize=10)
            axis.set_xlim(0, 1)
            axis.set_xlabel("interpolation α")
            axis.grid(True, alpha=0.3)
            if column == 0:  # overlaid experiments: a row each, named by its folder
                axis.set_ylabel(f"{experiment.name}\ntest error (%)" if experiment.label else "test error (%)")
                if axis.get_lines():  # the same ks in every column: one legend per row
                    axis.legend(fontsize=7, title="rewind", title_fontsize=7, loc="best")
    if not drawn:
        plt.close(figure)
        return None
    figure.suptitle("Test error between two copies trained with different data orders")
    figure.tight_layout()
    return _save(figure, output_dir, "stability_interpolation")


def _rewind_axis(axis, ks: List[int]):
    """Points at the measured ks; a symlog axis so k = 0 sits beside the later ones."""
    positive = [k for k in ks if k > 0]
    if positive and max(positive) / min(positive) > 10:
        axis.set_xscale("symlog", linthresh=min(positive), linscale=0.5)
        axis.set_xlim(-0.15 * min(positive), max(positive) * 1.4)  # no empty negative half
    axis.xaxis.set_major_locator(ticker.FixedLocator(ks))
    axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.xaxis.set_minor_locator(ticker.NullLocator())
    axis.set_xlabel("rewind iteration k")
    axis.grid(True, which="major", alpha=0.3)


def stability_vs_rewind_figure(experiments: List[data.Experiment], output_dir: str) -> Optional[List[str]]:
    """The ticket's test instability against the rewind iteration k, a line per level
    (colour: dense dark to sparse light); None unless more than one k was measured."""
    ks = sorted({k for e in experiments for k in data.rewind_iterations(e, variant="imp", pair="data")})
    if len(ks) < 2:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    colormap = plt.get_cmap("viridis")
    for index, experiment in enumerate(experiments):
        line_style, marker = _style(index)
        densities = data.stability_levels(experiment, variant="imp", pair="data")
        for rank, (level, density) in enumerate(densities.items()):
            series = data.stability_summary(experiment, "instability_test", "rewind_iteration",
                                            variant="imp", pair="data", level=level)
            name = f"{density * 100:.1f}% (level {level})"
            _band(axis, list(series), list(series.values()), colormap(0.9 * rank / max(len(densities) - 1, 1)),
                  linestyle=line_style, marker=marker, markersize=4,
                  label=f"{experiment.label}: {name}" if experiment.label else name)
    _threshold_line(axis, experiments)
    _rewind_axis(axis, ks)
    axis.set_ylabel("test instability (%)")
    axis.set_title("Instability of the ticket against the rewind iteration")
    entries = len(axis.get_lines())
    if entries > 7:  # one entry per level: beside the axes rather than over the lines
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axis.legend(fontsize=8, loc="best")
    return _save(figure, output_dir, "stability_vs_rewind")


def _instability_by_density(axis, experiment: data.Experiment, variant: str, pair: str, k: int, **style) -> List[float]:
    """Draws one variant's instability against percent remaining; returns the percents drawn."""
    series = data.stability_summary(experiment, "instability_test", "level", variant=variant, pair=pair,
                                    rewind_iteration=k)
    densities = data.stability_levels(experiment, variant=variant, pair=pair, rewind_iteration=k)
    levels = [lv for lv in series if lv in densities]
    x = [densities[lv] * 100 for lv in levels]
    if pair == "init":  # a baseline, not a series: hollow markers with ± std bars
        axis.errorbar(x, [series[lv].mean * 100 for lv in levels], yerr=[series[lv].std * 100 for lv in levels],
                      linestyle="none", markerfacecolor="none", capsize=3, **style)
    elif levels:
        _band(axis, x, [series[lv] for lv in levels], **style)
    return x


def stability_vs_density_figure(experiments: List[data.Experiment], output_dir: str) -> Optional[List[str]]:
    """Test instability against percent remaining: a panel per rewind iteration k, a line per
    variant (two data orders), hollow markers for the ticket's mask from two initialisations."""
    ks = sorted({k for e in experiments for k in data.rewind_iterations(e, pair="data")}) or [0]
    columns = min(len(ks), DENSITY_PANELS_PER_ROW)
    rows = -(-len(ks) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.6 * columns, 4.2 * rows), squeeze=False, sharey=True)
    panels = list(zip(axes.flat, ks))
    for axis in list(axes.flat)[len(ks):]:
        axis.set_visible(False)
    percents = set()
    for axis, k in panels:
        for index, experiment in enumerate(experiments):
            line_style, marker = _style(index)
            for variant, pair in data.stability_parts(experiment):
                color = VARIANT_COLORS.get(variant, "tab:gray")
                if pair == "init":
                    percents.update(_instability_by_density(
                        axis, experiment, variant, pair, 0, color=color, marker="o", markersize=7,
                        label=f"{experiment.legend_label(variant)}, two initialisations"))
                elif pair == "data":
                    percents.update(_instability_by_density(
                        axis, experiment, variant, pair, k, color=color, linestyle=line_style, marker=marker,
                        markersize=4, label=experiment.legend_label(variant)))
        axis.set_title(f"rewind k = {k}", fontsize=10)
    if not percents:
        plt.close(figure)
        return None
    for index, (axis, _) in enumerate(panels):
        _threshold_line(axis, experiments)
        _density_axis(axis, sorted(percents))
        if index % columns == 0:
            axis.set_ylabel("test instability (%)")
    figure.suptitle("Instability (error barrier between two copies) against percent of weights remaining")
    figure.tight_layout()
    handles, labels = panels[0][0].get_legend_handles_labels()  # the same lines in every panel: one legend
    if len(experiments) > 1:  # an overlay's long labels would hide the lines: below the panels
        figure.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2)
    else:
        panels[0][0].legend(handles, labels, fontsize=8, loc="best")
    return _save(figure, output_dir, "stability_vs_density")


def _transfer_panel(axis, setting: data.TransferSetting, metric: str) -> List[float]:
    """Draws one setting's modes, and the target's own ticket where compared, against percent
    remaining; returns the percents drawn."""
    densities = data.transfer_levels(setting)
    measured = data.transfer_series(setting)
    percents = []
    for variant, mode in measured:
        series = data.transfer_summary(setting, metric, variant, mode)
        levels = [lv for lv in series if lv in densities]
        if not levels:
            continue
        line_style, marker = _style(data.VARIANTS.index(variant) if variant in data.VARIANTS else len(data.VARIANTS))
        x = [densities[lv] * 100 for lv in levels]
        _band(axis, x, [series[lv] for lv in levels], MODE_COLORS.get(mode, "tab:gray"), linestyle=line_style,
              marker=marker, markersize=4, label=data.transfer_label(measured, variant, mode))
        percents += x
    own = data.compare_summary(setting, metric)
    if own:
        x = [densities[lv] * 100 for lv in own]
        _band(axis, x, list(own.values()), markersize=4, label="target's own ticket", **OWN_TICKET_STYLE)
        percents += x
    return percents


def transfer_accuracy_figure(experiments: List[data.Experiment], output_dir: str) -> Optional[List[str]]:
    """Test accuracy on the target against percent remaining: a row per transfer setting, a panel at
    the end of training and one at early stop, a line per mode (and the target's own ticket where
    compare_with names it); None without transfer rows."""
    grid = [(e, s) for e in experiments for s in e.transfer]
    if not grid:
        return None
    figure, axes = plt.subplots(len(grid), len(TRANSFER_PANELS), figsize=(5.6 * len(TRANSFER_PANELS), 4.0 * len(grid)),
                                squeeze=False, sharey="row")
    drawn = 0
    for row, (experiment, setting) in enumerate(grid):
        name = f"{experiment.name}: {setting.description}" if experiment.label else setting.description
        for column, (axis, (metric, when)) in enumerate(zip(axes[row], TRANSFER_PANELS)):
            percents = _transfer_panel(axis, setting, metric)
            if not percents:
                axis.set_visible(False)
                continue
            drawn += 1
            _density_axis(axis, sorted(set(percents)))
            axis.set_title(f"{name}: {when}", fontsize=10)
            if column == 0:  # the same lines in both panels: one legend per row
                axis.set_ylabel("target test accuracy (%)")
                axis.legend(fontsize=8, loc="best")
    if not drawn:
        plt.close(figure)
        return None
    figure.suptitle("Transferred tickets: test accuracy on the target against percent of weights remaining")
    figure.tight_layout()
    return _save(figure, output_dir, "transfer_accuracy")


def draw_all(experiments: List[data.Experiment], output_dir: str) -> Dict[str, Optional[List[str]]]:
    """{figure name: written paths, or None when there was nothing to draw}; the stability
    and transfer figures are named only when an experiment has the branch's table, the
    methods figures when there is more than one experiment or a method branch ran."""
    os.makedirs(output_dir, exist_ok=True)
    written = {name: density_figure(experiments, name, output_dir) for name in DENSITY_FIGURES}
    written["training_curves"] = training_curves_figure(experiments, output_dir)
    if any(e.stability for e in experiments):
        written["stability_interpolation"] = stability_interpolation_figure(experiments, output_dir)
        written["stability_vs_rewind"] = stability_vs_rewind_figure(experiments, output_dir)
        written["stability_vs_density"] = stability_vs_density_figure(experiments, output_dir)
    if any(e.transfer for e in experiments):
        written["transfer_accuracy"] = transfer_accuracy_figure(experiments, output_dir)
    if methods.has_methods(experiments):
        written["methods_accuracy_vs_density"] = methods.accuracy_vs_density_figure(experiments, output_dir)
        written["methods_accuracy_vs_cost"] = methods.accuracy_vs_cost_figure(experiments, output_dir)
    written.update(combinations.draw(experiments, output_dir))
    return written
