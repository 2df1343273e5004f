"""Figures and tables of one or more experiments, from their results.csv and metrics.csv.

    python -m tf_lottery.report --experiment_dir=runs/lenet300_mnist [--experiment_dir=…] [--output=DIR]

Writes into DIR the paper's figures (PNG and SVG), report.md and a self-contained
report.html. Works on an experiment still in progress: it shows the finished
levels and lists what has not finished.
"""

import os
from typing import Dict, List, Optional, Sequence

from tf_lottery.report import data, documents, figures
from tf_lottery.report.data import ReportError  # noqa: F401  (re-exported for callers)


def default_output(experiment_dirs: Sequence[str]) -> str:
    """<first experiment>/report: beside the results it is built from."""
    return os.path.join(experiment_dirs[0], "report")


def build_report(experiment_dirs: Sequence[str], output: Optional[str] = None,
                 tolerance: float = 0.005) -> Dict[str, object]:
    """Builds the report; returns {'output', 'experiments', 'figures', 'markdown', 'html'}.

    Args:
        experiment_dirs: experiment folders (each with config.json); several are overlaid.
        output: folder to write into (default: the first experiment's report/).
        tolerance: how far (absolute accuracy) below the dense network a level may
            fall and still count as matching it.

    Raises:
        ReportError: a folder is missing or is not an experiment.
    """
    if not experiment_dirs:
        raise ReportError("--experiment_dir: give at least one experiment folder")
    output = output or default_output(experiment_dirs)
    experiments: List[data.Experiment] = [data.load_experiment(d) for d in experiment_dirs]
    data.label_experiments(experiments)
    os.makedirs(output, exist_ok=True)
    written = figures.draw_all(experiments, output)
    blocks = documents.build_blocks(experiments, written, tolerance)
    markdown_path, html_path = os.path.join(output, "report.md"), os.path.join(output, "report.html")
    with open(markdown_path, "w") as f:
        f.write(documents.render_markdown(blocks))
    with open(html_path, "w") as f:
        f.write(documents.render_html(blocks, output))
    return {"output": output, "experiments": experiments, "figures": written,
            "markdown": markdown_path, "html": html_path}
