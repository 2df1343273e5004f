"""Run checkpoints (resumption) and weight files (θ0, θk, final weights)."""

import os
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from tf_lottery.errors import RunError
from tf_lottery.experiment import files
from tf_lottery.pruning import constraint


class CheckpointError(RunError):
    """A checkpoint or weight file that cannot be read; the message is one line."""


class RunCheckpoint:
    """Model, optimizer, iteration (hence data position) and running train metrics of a run, and the
    forward model's own variables when the trainer wraps the model (loop.ModelWrap)."""

    def __init__(self, directory: str, trainer, write_directory: Optional[str] = None):
        """Restores from `directory`; saves to `write_directory` (default: the same).

        A non-chief worker of a multi-worker job restores the chief's checkpoint but
        saves to a scratch directory of its own, as TensorFlow's multi-worker rules ask.
        """
        self.directory = directory
        tracked = dict(model=trainer.model, optimizer=trainer.optimizer, iteration=trainer.iteration,
                       train_loss=trainer.train_loss, train_accuracy=trainer.train_accuracy)
        forward = getattr(trainer, "forward_model", trainer.model)
        if forward is not trainer.model:  # a wrapped model's own state (tfmot's masks, step counter) resumes too
            tracked["forward_model"] = forward
        self.checkpoint = tf.train.Checkpoint(**tracked)
        self.manager = tf.train.CheckpointManager(self.checkpoint, write_directory or directory, max_to_keep=1)

    def restore(self) -> bool:
        """Restores the latest checkpoint, if any; True when one was restored."""
        path = tf.train.latest_checkpoint(self.directory)
        if path is None:
            return False
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, AssertionError) as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise CheckpointError(
                f"checkpoint {path} cannot be restored ({reason}); delete {self.directory} to restart that run"
            ) from None
        return True

    def save(self, iteration: int):
        self.manager.save(checkpoint_number=iteration)


def save_weights(model, path: str):
    """Writes every model variable except masks (BatchNorm statistics included) to an npz."""
    variables = constraint.model_weights(model)
    files.write_weights(path, [v.name for v in variables], [v.numpy() for v in variables])


read_weights = files.read_weights
weight_names = files.read_weight_names


def assign_weights(model, values: List[np.ndarray], source: str = "weights"):
    """Assigns values (by position) to every model variable except masks."""
    variables = constraint.model_weights(model)
    if len(values) != len(variables) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise CheckpointError(f"{source} do not fit model {model.name}: different variables or shapes")
    for variable, value in zip(variables, values):
        variable.assign(value)


def load_weights(model, path: str):
    assign_weights(model, read_weights(path), source=os.path.basename(path))


def weights_by_name(model) -> Dict[str, np.ndarray]:
    return {v.name: v.numpy() for v in constraint.model_weights(model)}
