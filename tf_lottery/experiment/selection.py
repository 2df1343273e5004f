"""The sparsest level that still matches the dense network: the one rule for it.

Export's --level=best and the reports' "smallest matching density" both call
`best_level`. Pure Python on result rows, so report code can use it without TensorFlow.
"""

import math
from typing import Iterable, Mapping, Optional

from tf_lottery import tasks
from tf_lottery.errors import UsageError
from tf_lottery.experiment.results import number

# Half a percentage point: about the spread of MNIST/CIFAR-10 test accuracy
# between reruns, so a level inside it is not measurably worse than level 0.
DEFAULT_TOLERANCE = 0.005
METRIC = "early_stop_test_accuracy"


class NoMatchingLevel(UsageError):
    """No level of the asked variant matches level 0 (or level 0 has not finished)."""


def column(task: Optional[tasks.Task] = None) -> str:
    """The results column the rule reads: the task's metric at early stop."""
    return METRIC if task is None or task.name == tasks.CLASSIFICATION else f"early_stop_test_{task.metric}"


def level_means(rows: Iterable[Mapping], variant: str, replicate: Optional[int] = None, metric: str = METRIC):
    """{level: (mean density, mean early-stop test accuracy, or `metric`)} over the rows of `variant`.

    Rows with no finite value are left out; several replicates are averaged.
    """
    sums = {}
    for row in rows:
        if row["variant"] != variant or (replicate is not None and int(row["replicate"]) != replicate):
            continue
        accuracy, density = number(row.get(metric)), number(row.get("density"))
        if not (math.isfinite(accuracy) and math.isfinite(density)):
            continue
        total = sums.setdefault(int(row["level"]), [0.0, 0.0, 0])
        total[0] += density
        total[1] += accuracy
        total[2] += 1
    return {level: (d / n, a / n) for level, (d, a, n) in sums.items()}


def best_level(rows: Iterable[Mapping], tolerance: Optional[float] = DEFAULT_TOLERANCE, variant: str = "imp",
               replicate: Optional[int] = None, task: Optional[tasks.Task] = None) -> int:
    """The sparsest level whose early-stop test accuracy is within `tolerance` of level 0.

    The rule: average each level's early-stop test accuracy over the given rows of
    `variant` (every replicate, or only `replicate`); a level matches when its mean
    is at least level 0's mean minus `tolerance` (an absolute difference, 0.005 =
    half a percentage point). Walking from level 1 towards sparser levels, the last
    level before the first one that does not match (or has not finished) is the
    answer, so a lucky level after a failing one is not taken for the ticket still
    matching. Level 0 is the dense `imp` run whatever `variant` is, since controls
    start at level 1; for `imp` level 0 itself always qualifies.

    Args:
      rows: results.csv rows (strings, as csv.DictReader gives them) or result.json dicts.
      tolerance: accuracy a level may lose against level 0 and still count.
      variant: the variant whose levels are candidates.
      replicate: only this replicate's rows; None averages every replicate.
      task: another task's metric at early stop, in its direction (a language model's bits per
        character: a level matches while at most `tolerance` above level 0's); None: accuracy.
        A `tolerance` of None is the task's default (tasks.Task.tolerance).

    Returns:
      The level number.

    Raises:
      UsageError: a negative tolerance.
      NoMatchingLevel: no finished level 0, or no level of `variant` within tolerance.
    """
    task = task or tasks.get(tasks.CLASSIFICATION)
    tolerance = task.tolerance if tolerance is None else tolerance
    if tolerance < 0:
        raise UsageError(f"--tolerance: must be >= 0, got {tolerance}")
    rows, metric = list(rows), column(task)
    baseline = level_means(rows, "imp", replicate, metric).get(0)
    if baseline is None:
        raise NoMatchingLevel("no finished level 0 (the dense imp run) to compare levels with")
    means = level_means(rows, variant, replicate, metric)
    best = 0 if variant == "imp" else None
    for level in range(1, max(means, default=0) + 1):
        if level not in means or task.worse(means[level][1], baseline[1], tolerance):
            break
        best = level
    if best is None:
        named = "accuracy" if task.name == tasks.CLASSIFICATION else task.metric.replace("_", " ")
        raise NoMatchingLevel(
            f"no {variant} level reaches level 0's early-stop test {named} {baseline[1]:.4f} within {tolerance}"
        )
    return best
