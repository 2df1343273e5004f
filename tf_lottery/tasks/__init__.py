"""What an experiment trains and measures: its task.

A dataset decides the task (DatasetInfo.task): a TFDS image classification set is
`classification`, a TFDS text set `language_model`, a gymnasium environment
(`--dataset=gym:CartPole-v1`) `reinforcement`. Everything else (levels, controls,
rewinding, resumption, results, branches, export) works on any task; a task says

* how a batch's per-example loss is taken from the model's outputs (supervised tasks),
* which numbers an evaluation adds to loss and accuracy (`derived`),
* the metric results and reports lead with (`metric`, named in metrics.csv and as
  `final_test_<metric>` / `early_stop_test_<metric>` in results.csv), and whether
  higher is better.

Early stopping is the same for every task: the evaluated iteration of minimum
validation loss. A language model's loss is its cross-entropy per character (nats);
a reinforcement-learning run's validation loss is minus its mean return over the
last 100 training episodes, so its minimum is the iteration of highest return.
"""

import dataclasses
import math

CLASSIFICATION = "classification"
LANGUAGE_MODEL = "language_model"
REINFORCEMENT = "reinforcement"
NAMES = (CLASSIFICATION, LANGUAGE_MODEL, REINFORCEMENT)


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    metric: str  # the headline metric, as metrics.csv names it
    label: str  # how a figure's axis names it on the test split
    higher_is_better: bool
    percent: bool  # drawn x100 in percent
    tolerance: float  # how much worse than dense a level may be and still match (the metric's unit)

    def derived(self, values: dict) -> dict:
        """Numbers an evaluation adds to {'loss', 'accuracy'}."""
        if self.name == LANGUAGE_MODEL:
            return {"bits_per_character": values["loss"] / math.log(2.0)}
        return {}

    def worse(self, value: float, reference: float, tolerance: float) -> bool:
        """Whether `value` is more than `tolerance` worse than `reference`, in the metric's direction."""
        return value < reference - tolerance if self.higher_is_better else value > reference + tolerance

    @property
    def supervised(self) -> bool:
        return self.name != REINFORCEMENT


TASKS = {
    # Tolerances: half a point of accuracy (reruns' spread on MNIST/CIFAR-10); 0.02 bits per character
    # (about twice the standard error of Tiny Shakespeare's 55,770 test characters); 25 in return (5% of
    # CartPole-v1's 500, one failed test episode in 20). report/measures.py explains them at length.
    CLASSIFICATION: Task(CLASSIFICATION, "accuracy", "test accuracy", True, True, 0.005),
    LANGUAGE_MODEL: Task(LANGUAGE_MODEL, "bits_per_character", "test bits per character", False, False, 0.02),
    REINFORCEMENT: Task(REINFORCEMENT, "return", "test return", True, False, 25.0),
}


def get(name: str) -> Task:
    return TASKS[name or CLASSIFICATION]


def of(info) -> Task:
    """The task of a DatasetInfo (or of a dataset.json's dict); classification when it names none."""
    name = info.get("task") if isinstance(info, dict) else getattr(info, "task", None)
    return get(name or CLASSIFICATION)


def per_example_loss(labels, logits):
    """Cross-entropy per example from logits; a sequence's is the mean over its positions, so the
    batch loss is the mean per position (every window has the same length)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    if losses.shape.rank > 1:
        losses = tf.reduce_mean(losses, axis=list(range(1, losses.shape.rank)))
    return losses
