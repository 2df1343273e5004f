"""Figures and tables of one or more experiments, from their results.csv and metrics.csv.

    python -m tf_lottery.report --experiment_dir=runs/lenet300_mnist [--experiment_dir=…] [--output=DIR]

Writes into DIR the paper's figures (PNG and SVG), report.md and a self-contained
report.html. Works on an experiment still in progress: it shows the finished
levels and lists what has not finished.
"""

import os
from typing import Dict, List, Mapping, Optional, Sequence

from tf_lottery.report import data, documents, figures, measures
from tf_lottery.report.data import ReportError  # noqa: F401  (re-exported for callers)


def default_output(experiment_dirs: Sequence[str]) -> str:
    """<first experiment>/report: beside the results it is built from."""
    return os.path.join(experiment_dirs[0], "report")


def build_report(experiment_dirs: Sequence[str], output: Optional[str] = None, tolerance: Optional[float] = None,
                 tolerances: Optional[Mapping[str, float]] = None) -> Dict[str, object]:
    """Builds the report; returns {'output', 'experiments', 'figures', 'markdown', 'html'}.

    The report leads with the experiments' task's metric (report.measures): test accuracy,
    test bits per character or test return.

    Args:
        experiment_dirs: experiment folders (each with config.json); several, of one task, are overlaid.
        output: folder to write into (default: the first experiment's report/).
        tolerance: how far (absolute accuracy) below the dense network a level of a classification
            experiment may fall and still count as matching it (default 0.005, --tolerance).
        tolerances: {task name: tolerance in its metric} for the other tasks ('language_model': bits
            per character, --bpc_tolerance; 'reinforcement': return, --return_tolerance); a task left
            out gets its default (report.measures).

    Raises:
        ReportError: a folder is missing or is not an experiment, the experiments are of different
            tasks, or a tolerance is negative or given for a task they are not of.
    """
    if not experiment_dirs:
        raise ReportError("--experiment_dir: give at least one experiment folder")
    output = output or default_output(experiment_dirs)
    experiments: List[data.Experiment] = [data.load_experiment(d) for d in experiment_dirs]
    given = dict(tolerances or {})
    if tolerance is not None:
        given[measures.CLASSIFICATION.task.name] = tolerance
    chosen = measures.tolerance(measures.common(experiments), given)
    data.label_experiments(experiments)
    os.makedirs(output, exist_ok=True)
    written = figures.draw_all(experiments, output)
    blocks = documents.build_blocks(experiments, written, chosen)
    markdown_path, html_path = os.path.join(output, "report.md"), os.path.join(output, "report.html")
    with open(markdown_path, "w") as f:
        f.write(documents.render_markdown(blocks))
    with open(html_path, "w") as f:
        f.write(documents.render_html(blocks, output))
    return {"output": output, "experiments": experiments, "figures": written,
            "markdown": markdown_path, "html": html_path}
