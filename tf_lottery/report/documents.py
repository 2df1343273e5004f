"""report.md and a self-contained report.html from one list of blocks.

The content is built once as a list of blocks (heading, paragraph, list, table,
code, image) and rendered twice, so the two documents cannot disagree.
"""

import base64
import datetime
import html
import os
import re
from typing import Dict, List, Optional

from tf_lottery.report import data
from tf_lottery.utils import spans

TABLE_METRICS = (
    # column, title, kind
    ("final_test_accuracy", "Final test accuracy (%)", "accuracy"),
    ("early_stop_test_accuracy", "Test accuracy at early stop (%)", "accuracy"),
    ("early_stop_iteration", "Early-stopping iteration", "iteration"),
    ("best_val_accuracy", "Best validation accuracy (%)", "accuracy"),
    ("final_test_loss", "Final test loss", "loss"),
    ("train_seconds", "Training time per run (s)", "seconds"),
)
FIGURE_CAPTIONS = {
    "accuracy_vs_density": "Final test accuracy against percent of weights remaining (mean, band: min-max over replicates).",
    "early_stop_iteration_vs_density": "Early-stopping iteration (minimum validation loss) against percent remaining.",
    "early_stop_accuracy_vs_density": "Test accuracy at the early-stopping iteration against percent remaining.",
    "training_curves": "Test accuracy during training at the levels nearest 100, 51.3, 21.1, 7.0, 3.6 and 1.9% remaining "
                       "(y axis zoomed on the last 90% of training).",
}


def format_summary(summary: Optional[data.Summary], kind: str) -> str:
    """'mean ± std' in the metric's unit; the ± part only with two or more replicates."""
    if summary is None:
        return "–"
    scale, digits = {"accuracy": (100.0, 2), "iteration": (1.0, 0), "loss": (1.0, 4), "seconds": (1.0, 0)}[kind]
    text = f"{summary.mean * scale:.{digits}f}"
    if summary.count > 1:
        text += f" ± {summary.std * scale:.{digits}f}"
    return text


def results_table(experiment: data.Experiment, metric: str, kind: str):
    """(header, rows): a row per finished level, a column per variant."""
    densities = data.level_densities(experiment)
    variants = experiment.variants()
    series = {v: data.summarize(experiment, metric, v, from_dense=False) for v in variants}
    header = ["level", "remaining (%)"] + [experiment.variant_label(v, with_experiment=False) for v in variants] + ["replicates"]
    rows = []
    for level, density in densities.items():
        counts = "/".join(str(series[v][level].count) if level in series[v] else "0" for v in variants)
        rows.append([str(level), f"{density * 100:.2f}"]
                    + [format_summary(series[v].get(level), kind) for v in variants] + [counts])
    return header, rows


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
    items = []
    for variant in experiment.variants():
        match = data.matching_density(experiment, variant, tolerance)
        if match is None:
            items.append(f"{experiment.variant_label(variant, with_experiment=False)}: level 0 (dense) has not finished; nothing to compare with.")
            continue
        level, density = match
        if level == 0:
            first = data.level_densities(experiment).get(1)
            where = f" ({first * 100:.2f}%)" if first is not None else ""
            items.append(f"{experiment.variant_label(variant, with_experiment=False)}: does not match even at the first pruned level{where}.")
            continue
        deepest = max(data.summarize(experiment, "early_stop_test_accuracy", variant))
        note = " (the sparsest finished level: it may match further down)" if level == deepest and level > 0 else ""
        items.append(f"{experiment.variant_label(variant, with_experiment=False)}: matches down to **{density * 100:.2f}%** "
                     f"of the weights (level {level}){note}.")
    blocks.append(("paragraph", f"Smallest density that still matches the dense network: the sparsest level such "
                                f"that it and every denser level have a mean early-stop test accuracy no more "
                                f"than {tolerance * 100:.2f} percentage points below level 0's."))
    blocks.append(("list", items))
    return blocks


def build_blocks(experiments: List[data.Experiment], figures: Dict[str, Optional[List[str]]],
                 tolerance: float) -> List[tuple]:
    """The whole report as blocks, figures referenced by file name."""
    blocks = [("heading", 1, "Lottery ticket report"),
              ("paragraph", f"Built {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} from "
                            + ", ".join(f"`{e.directory}`" for e in experiments) + ".")]
    if len(experiments) > 1:
        blocks.append(("paragraph", "Experiments overlaid (named by what differs between them): "
                                    + "; ".join(f"`{e.name}` = {e.label}" for e in experiments) + "."))
    blocks.append(("heading", 2, "Figures"))
    for name, paths in figures.items():
        if paths:
            blocks.append(("image", os.path.basename(paths[0]), FIGURE_CAPTIONS[name]))
        else:
            blocks.append(("paragraph", f"*{name}: not drawn, no finished run has the data yet.*"))
    for experiment in experiments:
        title = experiment.name + (f" ({experiment.label})" if experiment.label and experiment.label != experiment.name else "")
        blocks.append(("heading", 2, f"Experiment {title}"))
        blocks += _status_blocks(experiment, tolerance)
        if experiment.rows:
            blocks.append(("paragraph", "Per level: mean ± sample standard deviation over replicates; "
                                        "`replicates` counts the finished runs of each variant."))
            for metric, heading, kind in TABLE_METRICS:
                header, rows = results_table(experiment, metric, kind)
                blocks.append(("heading", 3, heading))
                blocks.append(("table", header, rows))
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
