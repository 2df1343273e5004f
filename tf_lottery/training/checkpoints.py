"""Run checkpoints (resumption) and weight files (θ0, θk, final weights)."""

import os
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from tf_lottery.pruning import constraint
from tf_lottery.utils import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint or weight file that cannot be read; the message is one line."""


class RunCheckpoint:
    """Model, optimizer, iteration (hence data position) and running train metrics of a run."""

    def __init__(self, directory: str, trainer, write_directory: Optional[str] = None):
        """Restores from `directory`; saves to `write_directory` (default: the same).

        A non-chief worker of a multi-worker job restores the chief's checkpoint but
        saves to a scratch directory of its own, as TensorFlow's multi-worker rules ask.
        """
        self.directory = directory
        self.checkpoint = tf.train.Checkpoint(
            model=trainer.model, optimizer=trainer.optimizer, iteration=trainer.iteration,
            train_loss=trainer.train_loss, train_accuracy=trainer.train_accuracy,
        )
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
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, names=np.array([v.name for v in variables]),
                     **{f"w{i:04d}": v.numpy() for i, v in enumerate(variables)})


def read_weights(path: str) -> List[np.ndarray]:
    try:
        with np.load(path) as data:
            count = len([k for k in data.files if k.startswith("w")])
            return [data[f"w{i:04d}"] for i in range(count)]
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise CheckpointError(f"cannot read weights {path} ({error}); delete it to recompute it") from None


def weight_names(path: str) -> List[str]:
    with np.load(path) as data:
        return [str(n) for n in data["names"]]


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
