"""results.csv: one row per finished (replicate, level, variant), rebuilt from result.json files."""

import csv
from typing import List

from tf_lottery.config import VARIANTS
from tf_lottery.lottery.paths import ExperimentPaths
from tf_lottery.utils import atomic_path, read_json

RESULT_COLUMNS = (
    "replicate", "level", "variant", "density", "remaining_weights", "total_weights",
    "final_test_accuracy", "early_stop_iteration", "early_stop_test_accuracy", "best_val_accuracy",
    "final_validation_accuracy", "final_test_loss", "early_stop_validation_loss", "final_iteration",
    "train_seconds",
)


def result_rows(paths: ExperimentPaths) -> List[dict]:
    """Every finished run's result.json, in results.csv's order."""
    rows = [read_json(p) for p in paths.result_files()]
    rows.sort(key=lambda r: (r["replicate"], r["level"], VARIANTS.index(r["variant"])))
    return rows


def write_results(paths: ExperimentPaths) -> List[dict]:
    """Rewrites results.csv from every finished run's result.json."""
    rows = result_rows(paths)
    with atomic_path(paths.results) as tmp:  # a name of its own per process sharing the experiment
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, RESULT_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return rows


def read_results(path: str) -> List[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
