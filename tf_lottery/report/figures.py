"""The paper's figures (Frankle & Carbin 2019, figures 3 and 4) drawn with matplotlib.

Each figure is written as PNG and SVG. Lines are a mean over replicates with a
shaded band from the minimum to the maximum replicate.
"""

import os
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")  # files only: the report runs on machines without a display
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position
from matplotlib import ticker  # noqa: E402  pylint: disable=wrong-import-position

from tf_lottery.report import data  # noqa: E402  pylint: disable=wrong-import-position

VARIANT_COLORS = {"imp": "tab:blue", "reinit": "tab:orange", "random_prune": "tab:green"}
# Several experiments share the variant colours and differ in line style, as
# the paper draws one-shot beside iterative pruning.
EXPERIMENT_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1)), "v"), ((0, (1, 1)), "P")]
CURVE_TARGETS = (100.0, 51.3, 21.1, 7.0, 3.6, 1.9)  # percent remaining, the paper's figure 3 levels
DENSITY_TICKS = (100, 51.3, 21.1, 7.0, 3.6, 1.9, 0.7, 0.3)
FIGURE_FORMATS = ("png", "svg")

DENSITY_FIGURES = {
    # name: (metric, y label, title)
    "accuracy_vs_density": ("final_test_accuracy", "final test accuracy",
                            "Test accuracy at the end of training"),
    "early_stop_iteration_vs_density": ("early_stop_iteration", "early-stopping iteration",
                                        "Early-stopping iteration (minimum validation loss)"),
    "early_stop_accuracy_vs_density": ("early_stop_test_accuracy", "test accuracy at early stop",
                                       "Test accuracy at the early-stopping iteration"),
}
FIGURES = tuple(DENSITY_FIGURES) + ("training_curves",)


def _style(index: int):
    return EXPERIMENT_STYLES[index % len(EXPERIMENT_STYLES)]


def _density_axis(axis, level_percents: List[float]):
    lowest_percent = min(level_percents)
    axis.set_xscale("log")
    axis.set_xlim(108, max(lowest_percent * 0.9, 0.1))  # inverted: pruning proceeds to the right
    ticks = [t for t in DENSITY_TICKS if t >= lowest_percent * 0.9]
    if len(ticks) < 3:  # a short experiment: label its own levels instead
        ticks = sorted({round(d, 1) for d in level_percents}, reverse=True)
    axis.xaxis.set_major_locator(ticker.FixedLocator(ticks))
    axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.xaxis.set_minor_locator(ticker.NullLocator())
    axis.set_xlabel("percent of weights remaining")
    axis.grid(True, which="major", alpha=0.3)


def _save(figure, output_dir: str, name: str) -> List[str]:
    paths = []
    for extension in FIGURE_FORMATS:
        path = os.path.join(output_dir, f"{name}.{extension}")
        figure.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    plt.close(figure)
    return paths


def density_figure(experiments: List[data.Experiment], name: str, output_dir: str) -> Optional[List[str]]:
    """One metric against percent remaining, a line per experiment and variant; None if no data."""
    metric, y_label, title = DENSITY_FIGURES[name]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    percents, drawn = set(), 0
    for index, experiment in enumerate(experiments):
        densities = data.level_densities(experiment)
        line_style, marker = _style(index)
        for variant in experiment.variants():
            series = data.summarize(experiment, metric, variant)
            levels = [lv for lv in series if lv in densities]
            if not levels:
                continue
            x = [densities[lv] * 100 for lv in levels]
            mean = [series[lv].mean for lv in levels]
            color = VARIANT_COLORS[variant]
            axis.plot(x, mean, linestyle=line_style, marker=marker, markersize=4, color=color,
                      label=experiment.variant_label(variant))
            axis.fill_between(x, [series[lv].low for lv in levels], [series[lv].high for lv in levels],
                              color=color, alpha=0.15, linewidth=0)
            percents.update(x)
            drawn += 1
    if not drawn:
        plt.close(figure)
        return None
    _density_axis(axis, sorted(percents))
    axis.set_ylabel(y_label)
    axis.set_title(title)
    if drawn > 4:  # an overlay's long labels would hide the lines: put the legend beside the axes
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axis.legend(fontsize=8, loc="best")
    return _save(figure, output_dir, name)


def training_curves_figure(experiments: List[data.Experiment], output_dir: str) -> Optional[List[str]]:
    """Test accuracy against iteration for the levels nearest the paper's densities.

    A row per experiment and a column per variant; a colour per level, from dense
    (dark) to sparse (light), so rows and columns compare at a glance.
    """
    grid = [(e, v) for e in experiments for v in e.variants()]
    if not grid:
        return None
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
                series = data.curves(experiment, level, source)
                if not series:
                    continue
                iterations = list(series)
                late_values += [s.mean for i, s in series.items() if i >= 0.1 * iterations[-1]]
                # Spread over the chosen levels; stop short of viridis' pale yellow end.
                color = colormap(0.9 * rank / max(len(chosen) - 1, 1))
                axis.plot(iterations, [s.mean for s in series.values()], color=color,
                          label=f"{densities[level] * 100:.1f}%")
                axis.fill_between(iterations, [s.low for s in series.values()], [s.high for s in series.values()],
                                  color=color, alpha=0.15, linewidth=0)
            axis.set_title(experiment.variant_label(variant), fontsize=10)
            axis.set_xlabel("training iteration")
            axis.grid(True, alpha=0.3)
            if column == 0:
                axis.set_ylabel("test accuracy")
            axis.legend(fontsize=7, title="remaining", title_fontsize=7, loc="lower right")
    if late_values:
        # As the paper's figure 3: the first iterations climb from chance and would
        # flatten the differences between levels that matter, so they run off the axis.
        low, high = min(late_values), max(late_values)
        margin = max(0.15 * (high - low), 0.002)
        axes[0][0].set_ylim(low - margin, min(high + margin, 1.0))
    figure.suptitle("Test accuracy during training at selected pruning levels")
    figure.tight_layout()
    return _save(figure, output_dir, "training_curves")


def draw_all(experiments: List[data.Experiment], output_dir: str) -> Dict[str, Optional[List[str]]]:
    """{figure name: written paths, or None when there was nothing to draw}."""
    os.makedirs(output_dir, exist_ok=True)
    written = {name: density_figure(experiments, name, output_dir) for name in DENSITY_FIGURES}
    written["training_curves"] = training_curves_figure(experiments, output_dir)
    return written
