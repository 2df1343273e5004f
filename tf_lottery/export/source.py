"""A finished run of an experiment folder, rebuilt in memory for export.

Everything here reads the experiment's own files (config.json, dataset.json,
flags.cfg, the run's mask.npz, final_weights.npz and result.json), so an export
needs neither the original command line nor the dataset.
"""

import dataclasses
import os
from typing import Any, Dict, List, Optional

import numpy as np

from tf_lottery import config as config_lib
from tf_lottery import data, models
from tf_lottery.export import selection
from tf_lottery.lottery import plan as plan_lib
from tf_lottery.lottery.paths import ExperimentPaths
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training import checkpoints
from tf_lottery.utils import read_json


class ExportError(ValueError):
    """An experiment, level, variant or format that cannot be exported; the message is one line."""


class ExportCheckError(ExportError):
    """An exported artifact whose outputs do not match the model it was exported from."""


ACCURACY_FIELDS = (
    "final_test_accuracy", "early_stop_iteration", "early_stop_test_accuracy", "best_val_accuracy",
    "final_validation_accuracy", "final_iteration",
)


def _config_from_json(flat: Dict[str, Any]) -> config_lib.ExperimentConfig:
    """The experiment config from config.json (JSON lists back to tuples, unknown names dropped)."""
    known = {f.name for kind in config_lib.SECTIONS.values() for f in dataclasses.fields(kind)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items() if k in known}
    return config_lib.ExperimentConfig.from_flat(values)


@dataclasses.dataclass
class Experiment:
    """An experiment folder: its config, dataset description, flags and results."""

    paths: ExperimentPaths
    config: config_lib.ExperimentConfig
    dataset: data.DatasetInfo
    flags: List[str]

    @classmethod
    def open(cls, directory: str) -> "Experiment":
        paths = ExperimentPaths(os.path.abspath(directory))
        if not os.path.isdir(paths.root):
            raise ExportError(f"--experiment_dir: {directory} does not exist")
        if not (os.path.exists(paths.config) and os.path.exists(paths.dataset)):
            raise ExportError(f"--experiment_dir: {directory} is not a tf_lottery experiment (no config.json/dataset.json)")
        try:
            config = _config_from_json(read_json(paths.config)["config"])
        except (KeyError, ValueError, TypeError) as error:
            raise ExportError(f"--experiment_dir: cannot read {paths.config} ({str(error).splitlines()[0]})") from None
        info = read_json(paths.dataset)
        dataset = data.DatasetInfo(**{**info, "input_shape": tuple(info["input_shape"]),
                                      "mean": tuple(info.get("mean", ())), "std": tuple(info.get("std", ()))})
        flags = []
        if os.path.exists(paths.flags):
            with open(paths.flags) as f:
                flags = [line.rstrip("\n") for line in f if line.strip()]
        return cls(paths, config, dataset, flags)

    @property
    def name(self) -> str:
        return os.path.basename(self.paths.root)

    def result_rows(self) -> List[dict]:
        return [read_json(p) for p in self.paths.result_files()]

    def finished_levels(self, replicate: int, variant: str) -> List[int]:
        return sorted(int(r["level"]) for r in self.result_rows()
                      if int(r["replicate"]) == replicate and r["variant"] == variant)

    def resolve_level(self, level, replicate: int, variant: str, tolerance: float = selection.DEFAULT_TOLERANCE) -> int:
        """An int level, 'final' (the last finished level) or 'best' (selection.best_level), checked to exist."""
        replicates = sorted({int(r["replicate"]) for r in self.result_rows()})
        if replicate not in replicates:
            raise ExportError(f"--replicate: no finished run of replicate {replicate} in {self.paths.root} "
                              f"(finished replicates: {', '.join(map(str, replicates)) or 'none'})")
        levels = self.finished_levels(replicate, variant)
        if not levels:
            variants = sorted({r["variant"] for r in self.result_rows()})
            raise ExportError(f"--variant: no finished {variant!r} run in {self.paths.root} "
                              f"(finished variants: {', '.join(variants)})")
        if level == "final":
            return levels[-1]
        if level == "best":
            try:
                return selection.best_level(self.result_rows(), tolerance, variant, replicate)
            except ValueError as error:
                raise ExportError(f"--level=best: {error}") from None
        try:
            number = int(level)
        except (TypeError, ValueError):
            raise ExportError(f"--level: expected a level number, 'best' or 'final', got {level!r}") from None
        if number not in levels:
            raise ExportError(f"--level: level {number} of {variant} replicate {replicate} has not finished "
                              f"(finished levels: {', '.join(map(str, levels))})")
        return number

    def build_model(self, num_classes: Optional[int] = None):
        """The experiment's masked model, freshly initialised."""
        return models.build(self.config.model.model, self.dataset.input_shape,
                            num_classes or self.dataset.num_classes, **plan_lib.model_options(self.config))

    def model_options(self) -> Dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in plan_lib.model_options(self.config).items()}


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
            "model_options": experiment.model_options(),
            "dataset": dataclasses.asdict(experiment.dataset),
            "input_shape": list(experiment.dataset.input_shape),
            "num_classes": experiment.dataset.num_classes,
            "experiment": experiment.name,
            "replicate": self.replicate,
            "level": self.level,
            "variant": self.variant,
            "density": self.density,
            "layer_densities": masks_lib.layer_densities(self.masks),
            "remaining_weights": sum(masks_lib.counts(self.masks).values()),
            "total_weights": sum(int(m.size) for m in self.masks.values()),
            "accuracy": {k: self.result.get(k) for k in ACCURACY_FIELDS},
            "preprocessing": "(uint8 image / 255 - mean) / std, per channel",
            "flags": list(experiment.flags),
        }


def load_run(experiment: Experiment, replicate: int, level: int, variant: str) -> TrainedRun:
    """Rebuilds the model of a finished run with its final weights and masks."""
    paths = experiment.paths.run(replicate, level, variant)
    for path in (paths.result, paths.mask, paths.final_weights):
        if not os.path.exists(path):
            raise ExportError(f"--level: {path} is missing; level {level} {variant} replicate {replicate} has not finished")
    model = experiment.build_model()
    run_masks = masks_lib.load(paths.mask)
    try:
        checkpoints.load_weights(model, paths.final_weights)
        masks_lib.apply_masks(model, run_masks)
    except (checkpoints.CheckpointError, ValueError) as error:
        raise ExportError(str(error).splitlines()[0]) from None
    return TrainedRun(experiment, replicate, level, variant, model, run_masks, read_json(paths.result))


def initial_weights(experiment: Experiment, replicate: int, level: int, variant: str):
    """The weights a run was reset to before training, and their name ('theta_0' or 'theta_rewind').

    Level 0 starts at θ0; later imp and random_prune runs at θ0, or at θk when
    --rewind_iteration > 0. The reinit control's fresh initialisation is not stored.
    """
    if variant == "reinit":
        raise ExportError("--variant: the reinit control's random initialisation is not stored; "
                          "export its ticket from the imp or random_prune variant")
    rewind = level > 0 and experiment.config.pruning.rewind_iteration > 0
    path = experiment.paths.theta_rewind(replicate) if rewind else experiment.paths.theta_init(replicate)
    if not os.path.exists(path):
        raise ExportError(f"{path} is missing: the run's initial weights cannot be exported")
    try:
        values: List[np.ndarray] = checkpoints.read_weights(path)
        names = checkpoints.weight_names(path)
    except checkpoints.CheckpointError as error:
        raise ExportError(str(error)) from None
    return values, names, "theta_rewind" if rewind else "theta_0"
