"""What the report leads with for each task (tf_lottery.tasks): the measure.

A classification experiment is read in test accuracy (percent), a language model in
test bits per character (lower is better), a reinforcement-learning policy in test
return (the greedy policy's mean return). A Measure says which results.csv columns the
density figures and tables show, which metrics.csv curve the training curves draw, how
a value is written, and the matching rule's direction and default tolerance. Every
experiment of one report must share a task (`common`): overlaying bits per character
on accuracies would compare numbers that do not compare.

Default tolerances, how much worse than the dense network a level may be and still
count as matching it (each a flag of `python -m tf_lottery.report`):

* classification, 0.005 (--tolerance, absolute accuracy): half a percentage point,
  about the spread of MNIST/CIFAR-10 test accuracy between reruns
  (experiment.selection.DEFAULT_TOLERANCE, export's --level=best).
* language model, 0.02 bits per character (--bpc_tolerance): under 1% of the 1.5-2.7
  bits a small character model reaches on Tiny Shakespeare, and about twice the
  standard error of the test split's mean (871 windows of 64 characters, about 56k
  characters whose losses spread by some 2 bits: 2 / sqrt(56k) ~ 0.01), so a level
  inside it is not measurably worse than the dense network.
* reinforcement, 25 (--return_tolerance, absolute return): 5% of CartPole-v1's
  500-step limit, and what one of the test's 20 greedy episodes failing at once
  instead of reaching the limit costs the mean (500 / 20). An absolute tolerance,
  not a share of the dense return, so it means the same when the dense policy is
  weak and stays defined for environments whose returns are near zero or negative.
"""

import dataclasses
from typing import Dict, Iterable, Mapping, Optional, Tuple

from tf_lottery import tasks
from tf_lottery.errors import UsageError
from tf_lottery.experiment import selection

TRAIN_SECONDS = ("train_seconds", "Training time per run (s)", "seconds")
UNITS_KEPT = ("units_kept", "Units or channels kept (%)", "percent")  # structured tickets only
EARLY_STOP_ITERATION = ("early_stop_iteration", "Early-stopping iteration", "iteration")
ITERATION_FIGURE = ("early_stop_iteration", "early-stopping iteration",
                    "Early-stopping iteration (minimum validation loss)")


@dataclasses.dataclass(frozen=True)
class Measure:
    """How the report shows, compares and words one task's headline metric.

    Attributes:
        task: the task (tf_lottery.tasks.Task): its metric, label and direction.
        kind: documents.format_summary's kind for the metric's values.
        tolerance: the matching rule's default tolerance, in the metric's unit.
        tolerance_flag: the report's flag that sets it.
        density_figures: {figure name: (results.csv column, y label, title)}.
        table: (results.csv column, heading, kind) of the experiment's tables, in order.
        curve: (split, metric) of metrics.csv that training_curves draws.
        curve_label: its y label (without the percent sign).
        curve_title: training_curves' title.
        curve_margin: the least margin around the zoomed curves, in drawn units.
        short: the metric's name starting a title ('Accuracy against training cost').
        captions: the figure captions that differ from classification's.
    """

    task: tasks.Task
    kind: str
    tolerance: float
    tolerance_flag: str
    density_figures: Dict[str, Tuple[str, str, str]]
    table: Tuple[Tuple[str, str, str], ...]
    curve: Tuple[str, str]
    curve_label: str
    curve_title: str
    curve_margin: float
    short: str
    captions: Dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def classification(self) -> bool:
        return self.task.name == tasks.CLASSIFICATION

    @property
    def final(self) -> str:
        """results.csv's column of the metric at the end of training."""
        return f"final_test_{self.task.metric}"

    @property
    def early_stop(self) -> str:
        """results.csv's column the matching rule reads: the metric at the early-stopping iteration."""
        return f"early_stop_test_{self.task.metric}"

    @property
    def scale(self) -> float:
        """What a value is multiplied by where it is drawn or written (100: in percent)."""
        return 100.0 if self.task.percent else 1.0

    @property
    def noun(self) -> str:
        """'test accuracy', 'test bits per character', 'test return'."""
        return self.task.label

    @property
    def side(self) -> str:
        """Where a worse value lies: 'below' (higher is better) or 'above'."""
        return "below" if self.task.higher_is_better else "above"

    @property
    def fall(self) -> str:
        """The verb of a control that gets worse: it 'falls below' an accuracy, 'falls behind' a bits per character."""
        return "below" if self.task.higher_is_better else "behind"

    def worse(self, value: float, reference: float, tolerance: float) -> bool:
        """Whether `value` is more than `tolerance` worse than `reference` (the matching rule's test)."""
        if self.task.higher_is_better:
            return value < reference - tolerance
        return value > reference + tolerance

    def value_text(self, value: float) -> str:
        """'97.20%', '2.555 bpc', '493.8'."""
        if self.task.percent:
            return f"{value * 100:.2f}%"
        if self.kind == "bpc":
            return f"{value:.3f} bpc"
        return f"{value:.1f}"

    def tolerance_text(self, tolerance: float) -> str:
        """'0.50 percentage points', '0.020 bits per character', '25 in return'."""
        if self.task.percent:
            return f"{tolerance * 100:.2f} percentage points"
        if self.kind == "bpc":
            return f"{tolerance:.3f} bits per character"
        return f"{tolerance:g} in return"


CLASSIFICATION = Measure(
    tasks.get(tasks.CLASSIFICATION), "accuracy", selection.DEFAULT_TOLERANCE, "tolerance",
    density_figures={
        "accuracy_vs_density": ("final_test_accuracy", "final test accuracy", "Test accuracy at the end of training"),
        "early_stop_iteration_vs_density": ITERATION_FIGURE,
        "early_stop_accuracy_vs_density": ("early_stop_test_accuracy", "test accuracy at early stop",
                                           "Test accuracy at the early-stopping iteration"),
    },
    table=(
        ("final_test_accuracy", "Final test accuracy (%)", "accuracy"),
        ("early_stop_test_accuracy", "Test accuracy at early stop (%)", "accuracy"),
        EARLY_STOP_ITERATION,
        ("best_val_accuracy", "Best validation accuracy (%)", "accuracy"),
        ("final_test_loss", "Final test loss", "loss"),
        TRAIN_SECONDS,
        UNITS_KEPT,
    ),
    curve=("test", "accuracy"), curve_label="test accuracy",
    curve_title="Test accuracy during training at selected pruning levels", curve_margin=0.2, short="Accuracy")

LANGUAGE_MODEL = Measure(
    tasks.get(tasks.LANGUAGE_MODEL), "bpc", 0.02, "bpc_tolerance",
    density_figures={
        "accuracy_vs_density": ("final_test_bits_per_character", "final test bits per character",
                                "Test bits per character at the end of training"),
        "early_stop_iteration_vs_density": ITERATION_FIGURE,
        "early_stop_accuracy_vs_density": ("early_stop_test_bits_per_character",
                                           "test bits per character at early stop",
                                           "Test bits per character at the early-stopping iteration"),
    },
    table=(
        ("final_test_bits_per_character", "Final test bits per character", "bpc"),
        ("early_stop_test_bits_per_character", "Test bits per character at early stop", "bpc"),
        EARLY_STOP_ITERATION,
        ("final_validation_bits_per_character", "Final validation bits per character", "bpc"),
        ("final_test_loss", "Final test loss (nats per character)", "loss"),
        ("early_stop_test_loss", "Test loss at early stop (nats per character)", "loss"),
        TRAIN_SECONDS,
        UNITS_KEPT,
    ),
    curve=("test", "bits_per_character"), curve_label="test bits per character",
    curve_title="Test bits per character during training at selected pruning levels", curve_margin=0.02,
    short="Bits per character",
    captions={
        "accuracy_vs_density": "Final test bits per character (lower is better) against percent of weights remaining "
                               "(mean, band: min-max over replicates).",
        "early_stop_accuracy_vs_density": "Test bits per character at the early-stopping iteration against percent "
                                          "remaining.",
        "training_curves": "Test bits per character during training at the levels nearest 100, 51.3, 21.1, 7.0, 3.6 "
                           "and 1.9% remaining (y axis zoomed on the last 90% of training).",
    })

REINFORCEMENT = Measure(
    tasks.get(tasks.REINFORCEMENT), "return", 25.0, "return_tolerance",
    density_figures={
        "accuracy_vs_density": ("final_test_return", "final test return", "Test return at the end of training"),
        "early_stop_iteration_vs_density": ITERATION_FIGURE,
        "early_stop_accuracy_vs_density": ("early_stop_test_return", "test return at early stop",
                                           "Test return at the early-stopping iteration"),
    },
    table=(
        ("final_test_return", "Final test return (greedy policy)", "return"),
        ("early_stop_test_return", "Test return at early stop (greedy policy)", "return"),
        ("early_stop_iteration", "Early-stopping iteration (highest validation return)", "iteration"),
        ("best_validation_return", "Best validation return (mean of the last 100 training episodes)", "return"),
        ("solved_iteration", "Iteration solved", "solved"),
        TRAIN_SECONDS,
        UNITS_KEPT,
    ),
    curve=("validation", "return"), curve_label="validation return",
    curve_title="Validation return (last 100 training episodes) during training at selected pruning levels",
    curve_margin=5.0, short="Return",
    captions={
        "accuracy_vs_density": "Final test return (the greedy policy's mean over its test episodes) against percent "
                               "of weights remaining (mean, band: min-max over replicates).",
        "early_stop_accuracy_vs_density": "Test return at the early-stopping iteration (highest validation return) "
                                          "against percent remaining.",
        "training_curves": "Validation return (mean of the last 100 training episodes; the test is played only every "
                           "--test_every iterations) during training at the levels nearest 100, 51.3, 21.1, 7.0, 3.6 and 1.9% "
                           "remaining (y axis zoomed on the last 90% of training).",
    })

MEASURES = {m.task.name: m for m in (CLASSIFICATION, LANGUAGE_MODEL, REINFORCEMENT)}
SOLVED_NOTE = ("Iteration solved: the first evaluation at which the validation return (the last 100 training "
               "episodes) reached the environment's threshold (CartPole-v1: 475), over the replicates that did; "
               "`never` where none did, and `(n of m solved)` where only some did.")


def of(experiment) -> Measure:
    """The measure of an experiment (anything with a `task`, tf_lottery.tasks.Task)."""
    return MEASURES[experiment.task.name]


def common(experiments: Iterable) -> Measure:
    """The measure every experiment shares (classification for none); UsageError when their tasks differ."""
    experiments = list(experiments)
    names = {e.task.name for e in experiments}
    if len(names) > 1:
        each = ", ".join(f"{e.name} is {e.task.name}" for e in experiments)
        raise UsageError(f"--experiment_dir: cannot overlay experiments of different tasks ({each}); their metrics do "
                         "not compare: report each task on its own")
    return MEASURES[names.pop()] if names else CLASSIFICATION


def tolerance(measure: Measure, given: Optional[Mapping[str, float]] = None) -> float:
    """The matching tolerance of `measure`'s task: given[task name] or its default.

    Raises:
        UsageError: a negative tolerance, or one given for a task the report is not of.
    """
    given = dict(given or {})
    for name, value in given.items():
        flag = MEASURES[name].tolerance_flag
        if name != measure.task.name:
            raise UsageError(f"--{flag}: is for {name} experiments; these are {measure.task.name}, whose tolerance "
                             f"is --{measure.tolerance_flag}")
        if value < 0:
            raise UsageError(f"--{flag}: must be >= 0, got {value}")
    return given.get(measure.task.name, measure.tolerance)
