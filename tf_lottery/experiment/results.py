"""The tables of an experiment: results.csv (the IMP loop) and branches/<branch>.csv.

results.csv has one row per finished (replicate, level, variant), rebuilt from the
runs' result.json files; a branch table one row per (branch settings, replicate,
level, variant) the branch measured. Both are rewritten whole and atomically.
"""

import csv
import math
import os
from typing import Dict, List, Mapping, Sequence

from tf_lottery.config import VARIANTS
from tf_lottery.experiment.files import read_json
from tf_lottery.experiment.paths import ExperimentPaths
from tf_lottery.utils import atomic_path

RESULT_COLUMNS = (
    "replicate", "level", "variant", "density", "remaining_weights", "total_weights",
    "final_test_accuracy", "early_stop_iteration", "early_stop_test_accuracy", "best_val_accuracy",
    "final_validation_accuracy", "final_test_loss", "early_stop_validation_loss", "final_iteration",
    "train_seconds", "iterations_trained", "iterations_spent", "early_bird_iteration", "mask_criterion",
    "units_kept",
)
# Columns of the tasks other than classification, written where a run has them (tf_lottery.tasks).
TASK_COLUMNS = ("early_stop_test_loss", "final_test_bits_per_character", "early_stop_test_bits_per_character",
                "final_validation_bits_per_character", "final_test_return", "early_stop_test_return",
                "best_validation_return", "solved_iteration")
INTEGER_COLUMNS = ("solved_iteration", "replicate", "level", "remaining_weights", "total_weights", "early_stop_iteration", "final_iteration",
                   "rewind_iteration", "interpolation_points", "train_eval_examples", "batchnorm_batches", "iterations",
                   "iterations_trained", "iterations_spent", "early_bird_iteration")
TEXT_COLUMNS = ("variant", "branch", "branch_hash", "run", "pair", "batchnorm", "mode", "dataset", "optimizer",
                "output_layer", "output_mask", "compare_with", "mask_criterion", "init", "method", "ablation",
                "weights", "criterion")
# Every branch table starts with these; the branch's own measurements follow.
BRANCH_COLUMNS = ("branch", "branch_hash", "replicate", "level", "variant", "density")
METRIC_FIELDS = ("iteration", "split", "metric", "value")  # metrics.csv, one row per logged value


def number(value) -> float:
    """A table cell as a float; NaN for an empty or unparsable cell."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def typed(row: Mapping[str, str]) -> Dict:
    """A csv row with ints for counts and levels, floats for measurements, strings for names,
    booleans for True/False."""
    out = {}
    for key, value in row.items():
        if value in ("True", "False"):
            out[key] = value == "True"
        elif key in TEXT_COLUMNS:
            out[key] = value
        elif key in INTEGER_COLUMNS:
            parsed = number(value)
            out[key] = int(parsed) if math.isfinite(parsed) else parsed
        else:
            parsed = number(value)
            out[key] = value if (math.isnan(parsed) and value not in ("", "nan", "NaN")) else parsed
    return out


def result_rows(paths: ExperimentPaths) -> List[dict]:
    """Every finished run's result.json, in results.csv's order, with what each cost (add_costs)."""
    rows = []
    for path in paths.result_files():
        row = read_json(path)
        if "iterations_trained" not in row:  # written before result.json counted it: run.json says where it started
            spec = os.path.join(os.path.dirname(path), "run.json")
            start = int(read_json(spec).get("start_iteration", 0)) if os.path.exists(spec) else 0
            row["iterations_trained"] = int(row.get("final_iteration", 0)) - start
        rows.append(row)
    order = {variant: i for i, variant in enumerate(VARIANTS)}
    rows.sort(key=lambda r: (r["replicate"], r["level"], order.get(r["variant"], len(order)), r["variant"]))
    stored = _stored_config(paths)
    for row in rows:  # every row says which criterion chose its level's mask
        row["mask_criterion"] = stored.get("mask_criterion", "large_final")
    _add_units_kept(paths, rows, stored)
    return add_costs(rows, stored.get("prune_mode", "iterative"))


def _add_units_kept(paths: ExperimentPaths, rows: List[dict], stored: dict):
    """units_kept: the fraction of the structure's units (neurons, channels) each run's mask keeps,
    over all its groups (structure.json); empty for unstructured and n_of_m experiments."""
    if stored.get("pruning_structure", "unstructured") not in ("neurons", "channels"):
        return
    from tf_lottery.pruning import structure  # pylint: disable=import-outside-toplevel
    from tf_lottery.experiment.files import read_masks  # pylint: disable=import-outside-toplevel

    groups = structure.read_groups(paths.root)
    for row in rows:
        if "units_kept" in row or groups is None:
            continue
        mask = paths.run(row["replicate"], row["level"], row["variant"]).mask
        if os.path.exists(mask):
            row["units_kept"] = structure.units_kept_fraction(groups, read_masks(mask))


def _stored_config(paths: ExperimentPaths) -> dict:
    return read_json(paths.config).get("config", {}) if os.path.exists(paths.config) else {}


def add_costs(rows: List[dict], prune_mode: str) -> List[dict]:
    """Sets every row's iterations_spent: the training iterations it took to produce that network.

    A run's own iterations (iterations_trained) plus those its mask needed: nothing at
    level 0; at level L the whole cost of the imp run the mask was computed from (level
    L-1, or level 0 one-shot), whose own cost counts its mask's in turn. The controls
    share their level's imp mask, hence its cost. A dense run's first k iterations,
    where θk comes from, are counted once, in level 0. Where a run of the mask's lineage
    has not finished, the cost is left empty.
    """
    spent = {}  # (replicate, level) -> the imp run's cost
    for row in sorted(rows, key=lambda r: (r["replicate"], r["level"], r["variant"] != "imp")):
        replicate, level = row["replicate"], row["level"]
        if level == 0:
            mask_cost = 0
        else:
            mask_cost = spent.get((replicate, 0 if prune_mode == "oneshot" else level - 1))
        row["iterations_spent"] = None if mask_cost is None else mask_cost + row["iterations_trained"]
        if row["variant"] == "imp":
            spent[(replicate, level)] = row["iterations_spent"]
    return rows


def write_table(path: str, columns: Sequence[str], rows: Sequence[Mapping]):
    with atomic_path(path) as tmp:  # a name of its own per process sharing the experiment
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def write_results(paths: ExperimentPaths) -> List[dict]:
    """Rewrites results.csv from every finished run's result.json; returns its rows."""
    rows = result_rows(paths)
    extra = [c for c in TASK_COLUMNS if any(c in row for row in rows)]
    write_table(paths.results, RESULT_COLUMNS + tuple(extra), rows)
    return rows


def read_table(path: str) -> List[dict]:
    """A results or branch table as typed rows ([] when it does not exist yet)."""
    try:
        with open(path, newline="") as f:
            return [typed(row) for row in csv.DictReader(f)]
    except FileNotFoundError:
        return []


def read_metrics(path: str) -> List[dict]:
    """A run's metrics.csv as rows of iteration, split, metric and float value ([] if absent)."""
    try:
        with open(path, newline="") as f:
            return [{"iteration": int(r["iteration"]), "split": r["split"], "metric": r["metric"],
                     "value": float(r["value"])} for r in csv.DictReader(f)]
    except FileNotFoundError:
        return []


def curve(path: str, split: str = "test", metric: str = "accuracy") -> Dict[int, float]:
    """{iteration: value} of one split/metric in a run's metrics.csv ({} if absent)."""
    return {r["iteration"]: r["value"] for r in read_metrics(path) if r["split"] == split and r["metric"] == metric}
