"""metrics.csv and TensorBoard events of a run, and the numbers results.csv keeps of it."""

import csv
import functools
import math
import os
from typing import Dict, List, Optional

import tensorflow as tf

from tf_lottery.experiment.results import METRIC_FIELDS as FIELDS, read_metrics  # noqa: F401


@functools.lru_cache(maxsize=None)
def _scalar_metadata():
    """The SummaryMetadata of TensorBoard's scalar plugin, as tf.summary.scalar attaches it."""
    from tensorboard.plugins.scalar import metadata  # pylint: disable=import-outside-toplevel

    return metadata.create_summary_metadata(display_name=None, description=None)


class MetricsLog:
    """Appends (iteration, split, metric, value) rows to metrics.csv and TensorBoard.

    On resumption from iteration t, rows after t (written after the checkpoint the
    run resumes from) are dropped, so the file reads as if never interrupted.
    """

    def __init__(self, csv_path: str, tensorboard_dir: Optional[str], resume_iteration: Optional[int] = None):
        self.csv_path = csv_path
        kept = [r for r in read_metrics(csv_path) if resume_iteration is not None and r["iteration"] <= resume_iteration]
        self.rows = kept  # what the file held before this process wrote to it
        os.makedirs(os.path.dirname(csv_path), exist_ok=True)
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(kept)
        self.writer = tf.summary.create_file_writer(tensorboard_dir) if tensorboard_dir else None

    def log(self, iteration: int, split: str, values: Dict[str, float]):
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            for metric, value in values.items():
                writer.writerow({"iteration": iteration, "split": split, "metric": metric, "value": repr(float(value))})
        if self.writer is not None:
            with self.writer.as_default():
                for metric, value in values.items():
                    # What tf.summary.scalar writes, without rebuilding its metadata and scope at each
                    # of the ~3,000 scalars of a LeNet level (0.5-0.7 ms a scalar against 3 ms, loaded CPU).
                    tf.summary.write(f"{split}/{metric}", tf.constant(float(value), tf.float32), step=iteration,
                                     metadata=_scalar_metadata())

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def best_validation_loss(rows: List[dict]) -> float:
    """The smallest finite validation loss in metrics rows (inf when there is none)."""
    losses = [r["value"] for r in rows if r["split"] == "validation" and r["metric"] == "loss" and math.isfinite(r["value"])]
    return min(losses, default=math.inf)


def summarize(rows: List[dict]) -> Dict[str, float]:
    """Final and early-stopping numbers of a run from its metrics rows.

    The early-stopping iteration is the evaluated iteration of minimum validation
    loss (the first, on ties); the test set is only read at the iteration chosen.
    Test is always evaluated there (hooks.ActiveRun.evaluate) whatever --test_every says.
    A task's own metrics (a language model's bits_per_character, a policy's return) get
    final_test_<metric> and early_stop_test_<metric> beside accuracy's.
    """
    series = {}
    for r in rows:
        series.setdefault((r["split"], r["metric"]), {})[r["iteration"]] = r["value"]
    val_loss = series.get(("validation", "loss"), {})
    test_acc = series.get(("test", "accuracy"), {})
    test_loss = series.get(("test", "loss"), {})
    val_acc = series.get(("validation", "accuracy"), {})
    if not (test_acc or test_loss):
        return {}
    final = max(test_acc or test_loss)
    result = {
        "final_iteration": final,
        "final_test_accuracy": test_acc.get(final, math.nan),
        "final_test_loss": test_loss.get(final, math.nan),
        "final_validation_accuracy": val_acc.get(final, math.nan),
        "best_val_accuracy": max(val_acc.values()) if val_acc else math.nan,
    }
    own = sorted(m for s, m in series if s == "test" and m not in ("loss", "accuracy"))
    for metric in own:
        result[f"final_test_{metric}"] = series[("test", metric)].get(final, math.nan)
        result[f"final_validation_{metric}"] = series.get(("validation", metric), {}).get(final, math.nan)
    validation_return = series.get(("validation", "return"), {})
    if validation_return:
        finite_returns = [v for v in validation_return.values() if math.isfinite(v)]
        result["best_validation_return"] = max(finite_returns, default=math.nan)
        # The first evaluated iteration whose validation return reached the environment's threshold
        # (validation/solved = 1; CartPole-v1: 475); -1 when none did.
        solved = series.get(("validation", "solved"), {})
        result["solved_iteration"] = min((i for i, v in solved.items() if v >= 1.0), default=-1)
    finite = {i: v for i, v in val_loss.items() if math.isfinite(v)}
    stop = min(sorted(finite), key=lambda i: finite[i]) if finite else None
    if stop is not None:
        result.update(early_stop_iteration=stop, early_stop_test_accuracy=test_acc.get(stop, math.nan),
                      early_stop_validation_loss=finite[stop])
    else:
        result.update(early_stop_iteration=-1, early_stop_test_accuracy=math.nan, early_stop_validation_loss=math.nan)
    if own:  # tasks other than classification: their loss at early stop is a headline number too
        result["early_stop_test_loss"] = test_loss.get(stop, math.nan) if stop is not None else math.nan
        for metric in own:
            result[f"early_stop_test_{metric}"] = (series[("test", metric)].get(stop, math.nan)
                                                   if stop is not None else math.nan)
    return result
