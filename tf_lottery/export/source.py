"""A finished run of an experiment folder, rebuilt in memory for export.

Everything comes through the experiment reader (tf_lottery.experiment.reader):
config, dataset description, flags, the run's mask, final weights, initial
weights and result, so an export needs neither the original command line nor the
dataset.
"""

import dataclasses
from typing import Any, Dict, Optional

from tf_lottery.errors import RunError, UsageError
from tf_lottery.experiment.reader import Experiment
from tf_lottery.lottery import plan as plan_lib
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training import checkpoints


class ExportError(UsageError):
    """An experiment, level, variant or format that cannot be exported; the message is one line."""


class ExportCheckError(RunError):
    """An exported artifact whose outputs do not match the model it was exported from."""


ACCURACY_FIELDS = (
    "final_test_accuracy", "early_stop_iteration", "early_stop_test_accuracy", "best_val_accuracy",
    "final_validation_accuracy", "final_iteration",
)


def build_model(experiment: Experiment, num_classes: Optional[int] = None):
    """The experiment's masked model, freshly initialised."""
    return plan_lib.build_model(experiment.config, experiment.dataset, num_classes)


def model_options(experiment: Experiment) -> Dict[str, Any]:
    """The model's options as JSON values."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in plan_lib.model_options(experiment.config).items()}


@dataclasses.dataclass
class TrainedRun:
    """One finished run: the masked model holding its final weights, and what describes it."""

    experiment: Experiment
    replicate: int
    level: int
    variant: str
    model: Any  # tf_keras.Model with the run's masks and final weights
    masks: masks_lib.Masks
    result: Dict[str, Any]

    @property
    def density(self) -> float:
        return masks_lib.density(self.masks)

    def metadata(self) -> Dict[str, Any]:
        """What an exported artifact says about itself (JSON-serialisable)."""
        experiment = self.experiment
        return {
            "model": experiment.config.model.model,
            "model_options": model_options(experiment),
            "dataset": dataclasses.asdict(experiment.dataset),
            "input_shape": list(experiment.dataset.input_shape),
            "num_classes": experiment.dataset.num_classes,
            "experiment": experiment.name,
            "replicate": self.replicate,
            "level": self.level,
            "variant": self.variant,
            "density": self.density,
            "weight_densities": masks_lib.weight_densities(self.masks),
            "remaining_weights": sum(masks_lib.counts(self.masks).values()),
            "total_weights": sum(int(m.size) for m in self.masks.values()),
            "accuracy": {k: self.result.get(k) for k in ACCURACY_FIELDS},
            "preprocessing": "(uint8 image / 255 - mean) / std, per channel",
            "flags": list(experiment.flags),
        }


def load_run(experiment: Experiment, replicate: int, level: int, variant: str) -> TrainedRun:
    """Rebuilds the model of a finished run with its final weights and masks."""
    run_masks = experiment.masks(replicate, level, variant)
    weights = experiment.final_weights(replicate, level, variant)
    model = build_model(experiment)
    checkpoints.assign_weights(model, weights, source=experiment.run(replicate, level, variant).final_weights)
    masks_lib.apply_masks(model, run_masks)
    return TrainedRun(experiment, replicate, level, variant, model, run_masks, experiment.result(replicate, level, variant))

