"""report.md and a self-contained report.html from one list of blocks.

The content is built once as a list of blocks (heading, paragraph, list, table,
code, image) and rendered twice, so the two documents cannot disagree.
"""

import base64
import datetime
import html
import math
import os
import re
from typing import Dict, List, Optional

from tf_lottery.report import combinations, data, measures, methods
from tf_lottery.utils import spans

FIGURE_CAPTIONS = {
    "accuracy_vs_density": "Final test accuracy against percent of weights remaining (mean, band: min-max over replicates).",
    "early_stop_iteration_vs_density": "Early-stopping iteration (minimum validation loss) against percent remaining; "
                                       "hollow markers: a replicate stopped at its last iteration (censored: the "
                                       "true early-stopping iteration is at least this).",
    "early_stop_accuracy_vs_density": "Test accuracy at the early-stopping iteration against percent remaining.",
    "training_curves": "Test accuracy during training at the levels nearest 100, 51.3, 21.1, 7.0, 3.6 and 1.9% remaining "
                       "(y axis zoomed on the last 90% of training).",
    "stability_interpolation": "Test error along the line between two copies of the ticket (imp) trained from the same "
                               "weights with different data orders, at up to four levels spread over the densities, "
                               "a line per rewind iteration k (mean, band: ± one standard deviation over replicates).",
    "stability_vs_rewind": "Test instability of the ticket (imp, two data orders) against the rewind iteration k, "
                           "a line per level (mean ± one standard deviation); dashed: the stable threshold.",
    "stability_vs_density": "Test instability against percent of weights remaining, a line per variant (two data "
                            "orders) and a panel per rewind iteration k (mean ± one standard deviation); hollow "
                            "markers: the same masks from two random initialisations; dashed: the stable threshold.",
    "transfer_accuracy": "Test accuracy on the target of the transferred tickets against percent of weights "
                         "remaining, a row per transfer setting, at the end of training and at early stop, a line "
                         "per mode (mean, band: ± one standard deviation over replicates); dashed: the target "
                         "experiment's own ticket (compare_with) at the same density.",
}
FIGURE_CAPTIONS.update(methods.CAPTIONS)
FIGURE_CAPTIONS.update(combinations.CAPTIONS)
NOT_DRAWN = {  # why a figure is missing, where it is not that nothing has finished
    "stability_vs_rewind": "fewer than two rewind iterations k of the ticket were measured",
}
# Figures of the branches that measure accuracy whatever the task (stability, transfer, combine, franken).
ACCURACY_FIGURES = ("stability_interpolation", "stability_vs_rewind", "stability_vs_density", "transfer_accuracy",
                    *combinations.CAPTIONS)
PAIR_LABELS = {"data": "two data orders", "init": "two initialisations"}
STABILITY_COLUMNS = (
    # column, title, kind
    ("instability_test", "instability, test (%)", "percent"),
    ("instability_train", "instability, train (%)", "percent"),
    ("l2_distance", "L2 distance (relative)", "distance"),
    ("disagreement", "disagreement (%)", "percent"),
    ("endpoint_test_accuracy", "endpoint test accuracy (%)", "accuracy"),
)


def _has_value(value) -> bool:
    return value not in (None, "") and not (isinstance(value, float) and math.isnan(value))


def format_summary(summary: Optional[data.Summary], kind: str) -> str:
    """'mean ± std' in the metric's unit; the ± part only with two or more replicates."""
    if summary is None:
        return "–"
    scale, digits = {"accuracy": (100.0, 2), "iteration": (1.0, 0), "loss": (1.0, 4), "seconds": (1.0, 0),
                     "percent": (100.0, 2), "distance": (1.0, 3), "bpc": (1.0, 3), "return": (1.0, 1)}[kind]
    text = f"{summary.mean * scale:.{digits}f}"
    if summary.count > 1:
        text += f" ± {summary.std * scale:.{digits}f}"
    return text


CENSORED_MARK = "≥ "  # before an early-stop iteration at least one of whose replicates stopped at its last iteration
CENSORED_NOTE = ("≥: in at least one replicate the early-stopping iteration is the last iteration trained (nothing "
                 "earlier had a lower validation loss), so the true early-stopping iteration is at least this; the "
                 "figure draws these points hollow.")


def solved_cell(values: List) -> str:
    """A level's solved_iteration over replicates (-1: never solved): 'mean ± std' of those that solved,
    '(n of m solved)' after it when not all did, 'never' when none did."""
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return "–"
    solved = [v for v in values if v >= 0]
    if not solved:
        return "never"
    text = format_summary(data.Summary.of(solved), "iteration")
    return text if len(solved) == len(values) else f"{text} ({len(solved)} of {len(values)} solved)"


def results_table(experiment: data.Experiment, metric: str, kind: str):
    """(header, rows): a row per finished level, a column per variant. An early-stopping iteration
    censored in a replicate (data.is_censored) is marked '≥ '; kind 'solved' is a solved_cell."""
    densities = data.level_densities(experiment)
    variants = experiment.variants()
    if kind == "solved":
        return _solved_table(experiment, metric, densities, variants)
    series = {v: data.summarize(experiment, metric, v, from_dense=False) for v in variants}
    censored = ({v: data.censored_counts(experiment, v, from_dense=False) for v in variants}
                if metric == "early_stop_iteration" else {})
    header = ["level", "remaining (%)"] + [experiment.variant_label(v, with_experiment=False) for v in variants] + ["replicates"]
    rows = []
    for level, density in densities.items():
        counts = "/".join(str(series[v][level].count) if level in series[v] else "0" for v in variants)
        cells = []
        for v in variants:
            cell = format_summary(series[v].get(level), kind)
            if censored and censored[v].get(level, (0, 0))[0] and level in series[v]:
                cell = CENSORED_MARK + cell
            cells.append(cell)
        rows.append([str(level), f"{density * 100:.2f}"] + cells + [counts])
    return header, rows


def _solved_table(experiment: data.Experiment, metric: str, densities: Dict[int, float], variants: List[str]):
    values = {v: data.level_values(experiment, metric, v, from_dense=False) for v in variants}
    header = (["level", "remaining (%)"] + [experiment.variant_label(v, with_experiment=False) for v in variants]
              + ["replicates"])
    rows = []
    for level, density in densities.items():
        counts = "/".join(str(len(values[v].get(level, []))) for v in variants)
        cells = [solved_cell(values[v].get(level, [])) for v in variants]
        rows.append([str(level), f"{density * 100:.2f}"] + cells + [counts])
    return header, rows


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.2f}%"


def _undertrained_sentence(experiment: data.Experiment) -> Optional[str]:
    undertrained = data.undertrained_dense(experiment)
    if undertrained is None:
        return None
    censored, total, stop = undertrained
    budget = experiment.config.get("iterations")
    where = f" (in {censored} of {total} replicates)" if total > 1 else ""
    of = f" of {int(budget):,}" if budget else ""
    return (f"**The dense network (level 0) is under-trained**: its early-stopping iteration is its last, "
            f"{stop:,}{of}{where}: nothing earlier was better, so it was still improving when training stopped. "
            f"The dense baseline is weak and matching it is easy; the comparison with the ticket at the same "
            f"density is the one that tells.")


def headline(experiment: data.Experiment, tolerance: float) -> str:
    """The experiment's result in one paragraph, as the paper states it: 'The winning ticket matches the
    dense network down to X% of the weights (level L); random reinitialisation falls below it from Y%;
    random pruning from Z%.', and a warning first when level 0 is under-trained.

    The ticket's rule is data.matching_density (for classification selection.best_level, export's
    --level=best); a control's is data.falls_below: the first level at which its mean early-stop test
    metric is more than `tolerance` worse than the dense network or the ticket at that level. A
    metric where lower is better (bits per character) says 'falls behind' for 'falls below'.
    """
    fall_word = measures.of(experiment).fall
    match = data.matching_density(experiment, "imp", tolerance)
    ticket = experiment.variant_name("imp")
    if not any(r["level"] == 0 and r["variant"] == "imp" for r in experiment.rows):
        return "The dense network (level 0) has not finished: nothing to compare with yet."
    densities = data.level_densities(experiment)
    if match is None or match[0] == 0:
        first = densities.get(1)
        text = (f"The {ticket} does not match the dense network even at the first pruned level"
                + (f" ({_percent(first)}, level 1)" if first is not None else "") + "")
    else:
        level, density = match
        sparsest = level == max(densities)
        text = (f"The {ticket} matches the dense network down to **{_percent(density)}** of the weights "
                f"(level {level}{', the sparsest that ran: it may match further down' if sparsest else ''})")
    said_falls = False
    for variant in experiment.variants():
        fall = data.falls_below(experiment, variant, tolerance) if variant != "imp" else None
        if fall is None:
            continue
        name = experiment.variant_name(variant)
        if fall.level is not None:
            verb = "" if said_falls else f" falls {fall_word} it"
            text += f"; {name}{verb} from **{_percent(fall.density)}** (level {fall.level})"
            said_falls = True
        elif fall.sparsest is not None:
            text += (f"; {name} does not fall {fall_word} it down to {_percent(fall.sparsest[1])} "
                     f"(level {fall.sparsest[0]})")
    text += "."
    warning = _undertrained_sentence(experiment)
    return f"{text} {warning}" if warning else text


def _rule_text(measure: measures.Measure, tolerance: float) -> str:
    """How the headline is decided, in the words of the task's metric and its direction."""
    side, fall = measure.side, measure.fall
    export = " (the rule of export's --level=best)"
    if measure.classification:
        metric, flag = measure.noun, ""
    else:
        better = "higher" if measure.task.higher_is_better else "lower"
        metric = f"{measure.noun} ({'bpc; ' if measure.kind == 'bpc' else ''}{better} is better)"
        flag = f" (--{measure.tolerance_flag})"
    return (f"How this is decided, on the mean early-stop {metric} over replicates with a tolerance of "
            f"{measure.tolerance_text(tolerance)}{flag}: the ticket (imp) matches the dense network down to the "
            f"sparsest level such that it and every denser level are no more than the tolerance {side} level "
            f"0{export}. A control (reinit, random_prune) falls {fall} from the first level, walking from the "
            f"densest pruned level, at which it is more than the tolerance {side} the dense network or more than "
            f"the tolerance {side} the ticket at the same level, so a control that keeps up with a weak dense "
            f"network but not with the ticket falls {fall}. The dense network is under-trained when its "
            f"early-stopping iteration is the last it trained in any replicate.")


def _finding_items(experiment: data.Experiment, tolerance: float) -> List[str]:
    """Per variant, the numbers behind the headline."""
    measure = measures.of(experiment)
    items = []
    densities = data.level_densities(experiment)
    for variant in experiment.variants():
        label = f"{experiment.variant_name(variant)} ({variant})"
        if variant == "imp":
            match = data.matching_density(experiment, variant, tolerance)
            if match is None:
                items.append(f"{label}: level 0 (dense) has not finished; nothing to compare with.")
            elif match[0] == 0:
                first = densities.get(1)
                where = f" ({first * 100:.2f}%)" if first is not None else ""
                items.append(f"{label}: does not match even at the first pruned level{where}.")
            else:
                level, density = match
                note = (" (the sparsest finished level: it may match further down)"
                        if level == max(densities) else "")
                items.append(f"{label}: matches down to **{density * 100:.2f}%** of the weights (level {level}){note}.")
            continue
        fall = data.falls_below(experiment, variant, tolerance)
        if fall is None:
            items.append(f"{label}: level 0 (dense) has not finished; nothing to compare with.")
        elif fall.level is None:
            where = (f"down to {fall.sparsest[1] * 100:.2f}% (level {fall.sparsest[0]})" if fall.sparsest
                     else "at any level: none has finished")
            items.append(f"{label}: does not fall {measure.fall} the dense network or the ticket {where}.")
        else:
            ticket = f", the ticket's {measure.value_text(fall.ticket)}" if fall.ticket is not None else ""
            items.append(f"{label}: falls {measure.fall} from **{fall.density * 100:.2f}%** (level {fall.level}): "
                         f"{measure.value_text(fall.accuracy)} against the dense network's "
                         f"{measure.value_text(fall.dense)}{ticket} "
                         f"(more than the tolerance {measure.side} the {' and the '.join(fall.below)}).")
    return items


def _status_blocks(experiment: data.Experiment, tolerance: float) -> List[tuple]:
    blocks = []
    missing, finished = experiment.missing_runs(), len(experiment.rows)
    planned = finished + len(missing)
    if not missing:
        blocks.append(("paragraph", f"Complete: all {planned} planned runs finished "
                                    f"({experiment.planned_replicates} replicate(s), levels 0-{experiment.planned_levels}, "
                                    f"variants {', '.join(experiment.planned_variants)})."))
    else:
        blocks.append(("paragraph", f"**Partial experiment**: {finished} of {planned} planned runs finished "
                                    f"({experiment.planned_replicates} replicate(s), levels 0-{experiment.planned_levels}, "
                                    f"variants {', '.join(experiment.planned_variants)}). Not finished yet:"))
        grouped: Dict[tuple, List[int]] = {}
        for replicate, level, variant in missing:
            grouped.setdefault((replicate, variant), []).append(level)
        running = {(r, lv, v): it for r, lv, v, it in experiment.in_progress}
        items = []
        for (replicate, variant), levels in sorted(grouped.items(), key=lambda kv: (kv[0][0], data.VARIANTS.index(kv[0][1]))):
            items.append(f"replicate {replicate}, {variant}: level(s) {spans(levels)}")
        for (replicate, level, variant), iteration in sorted(running.items()):
            total = experiment.config.get("iterations", "?")
            items.append(f"in progress: replicate {replicate} level {level} {variant} at iteration {iteration} of {total}")
        blocks.append(("list", items))
    if not experiment.rows:
        blocks.append(("paragraph", "No run has finished yet: there are no results to tabulate or draw."))
        return blocks
    blocks.append(("paragraph", headline(experiment, tolerance)))
    blocks.append(("paragraph", _rule_text(measures.of(experiment), tolerance)))
    blocks.append(("list", _finding_items(experiment, tolerance)))
    return blocks


def stability_label(experiment: data.Experiment, variant: str, pair: str) -> str:
    """'imp' for two data orders, 'imp, two initialisations' for the other pair."""
    label = experiment.variant_label(variant, with_experiment=False)
    return label if pair == "data" else f"{label}, {PAIR_LABELS.get(pair, pair)}"


def stability_table(experiment: data.Experiment, variant: str, pair: str):
    """(header, rows): a row per measured (k, level) of one variant and pair."""
    header = ["k", "level", "remaining (%)"] + [title for _, title, _ in STABILITY_COLUMNS] + ["stable", "matching"]
    rows = []
    for k in data.rewind_iterations(experiment, variant=variant, pair=pair):
        where = dict(variant=variant, pair=pair, rewind_iteration=k)
        series = {c: data.stability_summary(experiment, c, "level", **where) for c, _, _ in STABILITY_COLUMNS}
        for level, density in data.stability_levels(experiment, **where).items():
            counts = ["{}/{}".format(*data.stability_count(experiment, c, level=level, **where))
                      for c in ("stable", "matching")]
            rows.append([str(k), str(level), f"{density * 100:.2f}"]
                        + [format_summary(series[c].get(level), kind) for c, _, kind in STABILITY_COLUMNS] + counts)
    return header, rows


def _stability_settings(experiment: data.Experiment) -> str:
    """Which branch setting the section shows, how it measured, and what else the table holds."""
    def values(column):
        return " and ".join(str(v) for v in data.stability_settings(experiment, column)) or "?"

    shown = experiment.stability[0]["branch_hash"]
    batchnorm = values("batchnorm")
    if "recompute" in data.stability_settings(experiment, "batchnorm"):
        batchnorm += f" (on {values('batchnorm_batches')} training batches)"
    text = (f"Measured by the stability branch `{shown}`: {values('interpolation_points')} interpolation points, "
            f"BatchNorm statistics: {batchnorm}, training error on {values('train_eval_examples')} training examples.")
    others = {h: n for h, n in experiment.stability_hashes.items() if h != shown}
    if others:
        text += (" branches/stability.csv also holds rows of other training settings, not shown here: "
                 + ", ".join(f"`{h}` ({n} rows)" for h, n in others.items()) + ".")
    return text


def _stability_finding(experiment: data.Experiment, variant: str, pair: str) -> str:
    """The earliest k stable at every level, and the sparsest level stable and matching."""
    ks = data.rewind_iterations(experiment, variant=variant, pair=pair)
    levels = data.stability_levels(experiment, variant=variant, pair=pair)
    k = data.earliest_stable_k(experiment, variant, pair)
    measured = f"(k measured: {', '.join(map(str, ks))}; level(s) {spans(list(levels))})"
    first = (f"earliest k stable at every measured level: **k = {k}** {measured}" if k is not None
             else f"not stable at any measured k {measured}")
    sparsest = data.sparsest_stable_matching(experiment, variant, pair)
    if sparsest is None:
        second = "no level is stable and matching in every replicate"
    else:
        level, density, at = sparsest
        second = (f"the sparsest level stable and matching in every replicate is **{density * 100:.2f}%** remaining "
                  f"(level {level}, at k = {', '.join(map(str, at))})")
    return f"{stability_label(experiment, variant, pair)}: {first}; {second}."


def _stability_blocks(experiment: data.Experiment) -> List[tuple]:
    threshold = data.stable_threshold(experiment)
    tolerances = data.stability_settings(experiment, "matching_tolerance")
    tolerance = " and ".join(f"{t * 100:g}" for t in tolerances) or "?"
    parts = data.stability_parts(experiment)
    baseline = ("; two initialisations: the same mask from two random initialisations, the baseline of unrelated "
                "networks" if any(pair == "init" for _, pair in parts) else "")
    blocks = [("heading", 3, "Stability"),
              ("paragraph", "Two copies of a network are trained from the same weights (the dense run's after k "
                            "iterations, masked; k = 0: the initialisation) with different data orders, and their "
                            f"error is measured along the line between them (Frankle et al. 2020){baseline}. The "
                            "instability is the error barrier: the highest error on the line minus the mean of its "
                            f"two ends'. A pair is stable when its test instability is below {threshold * 100:g}%, "
                            f"and matching when its ends' mean test accuracy is at most {tolerance} percentage points "
                            "below the dense network's."),
              ("paragraph", _stability_settings(experiment)),
              ("paragraph", "Per variant: the earliest rewind iteration k at which every replicate is stable at "
                            "every level measured, and the sparsest level at which, for some k, every replicate is "
                            "both stable and matching:"),
              ("list", [_stability_finding(experiment, v, p) for v, p in parts]),
              ("paragraph", "Per rewind iteration k and level: mean ± sample standard deviation over replicates; "
                            "`stable` and `matching` count the replicates that are, of those measured.")]
    for variant, pair in parts:
        header, rows = stability_table(experiment, variant, pair)
        blocks.append(("heading", 4, f"Stability of {experiment.variant_label(variant, with_experiment=False)}, "
                                     f"{PAIR_LABELS.get(pair, pair)}"))
        blocks.append(("table", header, rows))
    return blocks


def transfer_table(setting: data.TransferSetting):
    """(header, rows): a row per level, a column per mode (final test accuracy on the target), and the
    target's own ticket where it was found at the same density."""
    measured = data.transfer_series(setting)
    series = {p: data.transfer_summary(setting, "final_test_accuracy", *p) for p in measured}
    own = data.compare_summary(setting, "final_test_accuracy")
    header = (["level", "remaining (%)"] + [data.transfer_label(measured, v, m) for v, m in measured]
              + (["target's own ticket"] if own else []) + ["replicates"])
    rows = []
    for level, density in data.transfer_levels(setting).items():
        counts = "/".join(str(series[p][level].count) if level in series[p] else "0" for p in measured)
        rows.append([str(level), f"{density * 100:.2f}"]
                    + [format_summary(series[p].get(level), "accuracy") for p in measured]
                    + ([format_summary(own.get(level), "accuracy")] if own else []) + [counts])
    return header, rows


def _transfer_target(setting: data.TransferSetting) -> str:
    """Which branch setting a table shows and what its target trains."""
    row = setting.rows[0]
    return (f"Branch setting `{setting.branch_hash}`: the target trains on {row['dataset']} with {row['optimizer']} "
            f"at learning rate {row['learning_rate']:g} for {row['iterations']} iterations (output layer "
            f"{row['output_layer']}).")


def _transfer_comparison(setting: data.TransferSetting) -> Optional[str]:
    """Where the target's own ticket comes from, and the levels it is left out at (one sentence); None
    without compare_with."""
    comparison = setting.comparison
    if comparison is None:
        return None
    if comparison.problem:
        return f"The target's own ticket is left out: compare_with cannot be read ({comparison.problem})."
    densities = data.transfer_levels(setting)
    matched = data.compared_levels(setting)
    where = f"imp of `{comparison.directory}` ({comparison.dataset})"
    tolerance = f"{data.COMPARE_DENSITY_TOLERANCE * 100:g}%"
    if not matched:
        return (f"The target's own ticket, {where}, is left out: it has no finished level within {tolerance} of "
                f"these densities.")
    missing = [f"{densities[level] * 100:.2f}% (level {level})" for level in densities if level not in matched]
    text = f"The target's own ticket is {where} at its finished level of the same density (within {tolerance})"
    if missing:
        text += f"; it is left out at {', '.join(missing)}, where it has none that close"
    return text + "."


def _transfer_findings(setting: data.TransferSetting, tolerance: float) -> List[tuple]:
    """Per mode (and the target's own ticket) the sparsest level still within `tolerance` of the
    target's dense accuracy; one sentence when there is no dense reference."""
    reference = data.transfer_dense_reference(setting)
    if reference is None:
        return [("paragraph", "No dense reference on the target: neither level 0 of a compare_with experiment "
                              "nor a level-0 mask_only run has finished, so no level is said to match.")]
    accuracy, source = reference
    densities = data.transfer_levels(setting)
    measured = data.transfer_series(setting)
    named = [(data.transfer_label(measured, v, m), data.transfer_summary(setting, "final_test_accuracy", v, m))
             for v, m in measured]
    own = data.compare_summary(setting, "final_test_accuracy")
    if own:
        named.append(("target's own ticket", own))
    items = []
    for label, series in named:
        found = data.sparsest_within(series, densities, accuracy, tolerance)
        if found is None:
            items.append(f"{label}: no measured level is within that.")
        else:
            items.append(f"{label}: down to **{found[1] * 100:.2f}%** remaining (level {found[0]}).")
    return [("paragraph", f"Sparsest level reached, walking from the densest, before the mean final test accuracy "
                          f"falls more than {tolerance * 100:.2f} percentage points below the target's dense network "
                          f"({accuracy * 100:.2f}%, {source}):"),
            ("list", items)]


def _transfer_blocks(experiment: data.Experiment, tolerance: float) -> List[tuple]:
    blocks = [("heading", 3, "Transfer"),
              ("paragraph", "Tickets of this experiment (the source) trained on another dataset or with other "
                            "training settings (the target), to ask whether a winning ticket is a property of the "
                            "data it was found on or of the architecture (Morcos et al. 2019, \"One ticket to win "
                            "them all\"): `ticket` is the source mask with its starting weights, `mask_only` the "
                            "source mask from a fresh initialisation, `random_ticket` a random mask with the "
                            "source's per-layer densities from a fresh initialisation. Per setting and level: final "
                            "test accuracy on the target, mean ± sample standard deviation over replicates; "
                            "`replicates` counts the finished runs of each mode.")]
    for setting in experiment.transfer:
        blocks.append(("heading", 4, f"Transfer: {setting.description} ({setting.branch_hash})"))
        comparison = _transfer_comparison(setting)
        blocks.append(("paragraph", _transfer_target(setting) + (f" {comparison}" if comparison else "")))
        blocks += _transfer_findings(setting, tolerance)
        header, rows = transfer_table(setting)
        blocks.append(("table", header, rows))
    return blocks


def accuracy_note(measure: measures.Measure) -> str:
    """What a branch section of another task than classification says first: its numbers are accuracy."""
    return (f"*Measured in accuracy (for a language model, next-character accuracy), as this branch computes it for "
            f"every task, not in this experiment's {measure.noun}.*")


def caption(name: str, measure: measures.Measure) -> str:
    """A figure's caption, in the words of the experiments' metric."""
    if measure.classification:
        return FIGURE_CAPTIONS[name]
    if name in ACCURACY_FIGURES:
        return f"{FIGURE_CAPTIONS[name]} {accuracy_note(measure)}"
    return measure.captions.get(name) or methods.captions(measure).get(name) or FIGURE_CAPTIONS[name]


def _noted(blocks: List[tuple], measure: measures.Measure) -> List[tuple]:
    """A branch section's blocks, with accuracy_note after its heading for a task other than classification."""
    if measure.classification or not blocks:
        return blocks
    return blocks[:1] + [("paragraph", accuracy_note(measure))] + blocks[1:]


def _results_blocks(experiment: data.Experiment) -> List[tuple]:
    """The tables of results.csv: the task's (measures.Measure.table), a table per metric."""
    blocks = []
    for metric, heading, kind in measures.of(experiment).table:
        if metric == "units_kept" and not any(_has_value(r.get(metric)) for r in experiment.rows):
            continue  # an unstructured experiment's column is empty
        header, rows = results_table(experiment, metric, kind)
        blocks.append(("heading", 3, heading))
        blocks.append(("table", header, rows))
        if any(cell.startswith(CENSORED_MARK) for row in rows for cell in row):
            blocks.append(("paragraph", CENSORED_NOTE))
        if kind == "solved":
            blocks.append(("paragraph", measures.SOLVED_NOTE))
    return blocks


def build_blocks(experiments: List[data.Experiment], figures: Dict[str, Optional[List[str]]],
                 tolerance: float) -> List[tuple]:
    """The whole report as blocks, figures referenced by file name; `tolerance` is in the unit of the
    experiments' metric (measures.common: one task for all)."""
    measure = measures.common(experiments)
    blocks = [("heading", 1, "Lottery ticket report"),
              ("paragraph", f"Built {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} from "
                            + ", ".join(f"`{e.directory}`" for e in experiments) + ".")]
    if len(experiments) > 1:
        blocks.append(("paragraph", "Experiments overlaid (named by what differs between them): "
                                    + "; ".join(f"`{e.name}` = {e.label}" for e in experiments) + "."))
    finished = [e for e in experiments if e.rows]
    if finished:
        blocks.append(("heading", 2, "Result"))
        for experiment in finished:
            text = headline(experiment, tolerance)
            blocks.append(("paragraph", f"`{experiment.name}` ({experiment.label}): {text}"
                                        if len(experiments) > 1 else text))
    blocks.append(("heading", 2, "Figures"))
    for name, paths in figures.items():
        if paths:
            blocks.append(("image", os.path.basename(paths[0]), caption(name, measure)))
        else:
            blocks.append(("paragraph", f"*{name}: not drawn, {NOT_DRAWN.get(name, 'no finished run has the data yet')}.*"))
    if methods.has_methods(experiments):
        blocks += methods.section(experiments)
    for experiment in experiments:
        title = experiment.name + (f" ({experiment.label})" if experiment.label and experiment.label != experiment.name else "")
        blocks.append(("heading", 2, f"Experiment {title}"))
        blocks += _status_blocks(experiment, tolerance)
        if experiment.rows:
            blocks.append(("paragraph", "Per level: mean ± sample standard deviation over replicates; "
                                        "`replicates` counts the finished runs of each variant."))
            blocks.append(("paragraph", "Columns: " + "; ".join(f"{v} = {experiment.variant_name(v)}"
                                                                 for v in experiment.variants()) + "."))
            blocks += _results_blocks(experiment)
        if experiment.stability:
            blocks += _noted(_stability_blocks(experiment), measure)
        if experiment.transfer:  # in accuracy for every task, so with accuracy's tolerance
            blocks += _noted(_transfer_blocks(experiment, tolerance if measure.classification
                                              else measures.CLASSIFICATION.tolerance), measure)
        blocks += _noted(combinations.section(experiment), measure)
        blocks.append(("heading", 3, "Flags"))
        blocks.append(("code", "\n".join(experiment.flags_lines) or "(flags.cfg missing)"))
    return blocks


def _inline_markdown(text: str) -> str:
    """The few inline marks the blocks use (**bold**, *italic*, `code`) as HTML."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def render_markdown(blocks: List[tuple]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            out.append("#" * block[1] + " " + block[2])
        elif kind == "paragraph":
            out.append(block[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "code":
            out.append("```\n" + block[1] + "\n```")
        elif kind == "image":
            out.append(f"![{os.path.splitext(block[1])[0]}]({block[1]})\n\n*{block[2]}*")
    return "\n\n".join(out) + "\n"


def render_html(blocks: List[tuple], image_dir: str) -> str:
    """HTML with every PNG embedded as a data URI: one file to mail or open anywhere."""
    body = []
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            body.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif kind == "paragraph":
            body.append(f"<p>{_inline_markdown(block[1])}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline_markdown(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "code":
            body.append(f"<pre>{html.escape(block[1])}</pre>")
        elif kind == "image":
            with open(os.path.join(image_dir, block[1]), "rb") as f:
                encoded = base64.b64encode(f.read()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{encoded}">'
                        f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;padding:0.8em}"
             "figcaption{color:#555;font-size:0.9em}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Lottery ticket report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
