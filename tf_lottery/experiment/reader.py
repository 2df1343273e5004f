"""The one way to read an experiment folder: settings, tables, masks and weights as numpy.

    experiment = Experiment.open("runs/lenet300_mnist")
    experiment.config.training.iterations, experiment.dataset.num_classes
    experiment.rows()                        # result.json of every finished run
    experiment.masks(0, 3, "imp")            # {weight path: 0/1 array}
    experiment.initial_weights(0, 3, "imp")  # what the run was reset to, and its name
    experiment.best_level("imp")             # the sparsest level still matching level 0

TensorFlow-free: the runner, export, report and every branch read through it, so
the folder layout (experiment.paths) and the result columns (experiment.results)
are written down once.
"""

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from tf_lottery import config as config_lib
from tf_lottery import tasks
from tf_lottery.data.datasets import DatasetInfo
from tf_lottery.errors import UsageError
from tf_lottery.experiment import files, results, selection
from tf_lottery.experiment.paths import ExperimentPaths, RunPaths, parse_run_folder
from tf_lottery.utils import spans


class NotAnExperiment(UsageError):
    """A folder that is missing or holds no experiment; the message names it."""


class UnfinishedRun(UsageError):
    """A run asked for that has not finished; the message says which runs have."""


def check_compatible(paths: ExperimentPaths, config: config_lib.ExperimentConfig):
    """Refuses to mix two experiments in one folder: every hashed setting stored in its
    config.json, defaults included, must equal `config`'s (reads only)."""
    if not os.path.exists(paths.config):
        return
    stored = files.read_json(paths.config, recover=f"delete {paths.root} or choose another --experiment_name")
    differing = config.differences(stored.get("config", {}))
    if differing:
        raise config_lib.ConfigError(
            f"--experiment_name: {paths.root} holds an experiment with other settings "
            f"(differs in {', '.join('--' + k for k in differing)}); choose another --experiment_name")


def config_from_stored(flat: Dict[str, Any]) -> config_lib.ExperimentConfig:
    """An ExperimentConfig from config.json's flat values (lists back to tuples, unknown names dropped)."""
    known = {f.name for kind in config_lib.SECTIONS.values() for f in dataclasses.fields(kind)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items() if k in known}
    return config_lib.ExperimentConfig.from_flat(values)


@dataclasses.dataclass
class Experiment:
    """An experiment folder, read without TensorFlow."""

    paths: ExperimentPaths
    config: config_lib.ExperimentConfig
    stored_config: Dict[str, Any]  # config.json's flat values, as written
    dataset: DatasetInfo
    flags: List[str]

    @classmethod
    def open(cls, directory: str) -> "Experiment":
        """Reads config.json, dataset.json and flags.cfg; raises NotAnExperiment with one line."""
        paths = ExperimentPaths(os.path.abspath(directory))
        if not os.path.isdir(paths.root):
            raise NotAnExperiment(f"--experiment_dir: {directory} does not exist")
        if not os.path.exists(paths.config):
            raise NotAnExperiment(f"--experiment_dir: {directory} has no config.json; is it an experiment folder?")
        recover = "it is written when the experiment starts: run its flags.cfg again with tf_lottery.main"
        stored = files.read_json(paths.config, recover=recover).get("config", {})
        try:
            config = config_from_stored(stored)
        except (config_lib.ConfigError, TypeError) as error:
            raise NotAnExperiment(f"--experiment_dir: cannot use {paths.config} ({str(error).splitlines()[0]})") from None
        info = files.read_json(paths.dataset, recover=recover) if os.path.exists(paths.dataset) else {"name": config.data.dataset}
        if "task" not in info and config.data.dataset.startswith("gym:"):  # tasks.reinforcement.PREFIX
            info["task"] = tasks.REINFORCEMENT
        dataset = DatasetInfo(**{**{"input_shape": (), "num_classes": 0}, **info,
                                 "input_shape": tuple(info.get("input_shape", ())),
                                 "mean": tuple(info.get("mean", ())), "std": tuple(info.get("std", ()))})
        flags = []
        if os.path.exists(paths.flags):
            with open(paths.flags) as f:
                flags = [line.strip() for line in f if line.strip()]
        return cls(paths, config, stored, dataset, flags)

    @property
    def name(self) -> str:
        return self.paths.name

    # Tables -------------------------------------------------------------------

    def rows(self) -> List[dict]:
        """result.json of every finished run of the IMP loop, in results.csv's order."""
        return results.result_rows(self.paths)

    def table(self) -> List[dict]:
        """results.csv, typed (what the last finished run wrote)."""
        return results.read_table(self.paths.results)

    def branch_names(self) -> List[str]:
        folder = os.path.dirname(self.paths.branch_table("x"))
        return sorted(n[:-4] for n in os.listdir(folder) if n.endswith(".csv")) if os.path.isdir(folder) else []

    def branch_table(self, branch: str) -> List[dict]:
        """branches/<branch>.csv, typed ([] before the branch has measured anything)."""
        return results.read_table(self.paths.branch_table(branch))

    # Runs ---------------------------------------------------------------------

    def run(self, replicate: int, level: int, variant: str) -> RunPaths:
        return self.paths.run(replicate, level, variant)

    def result(self, replicate: int, level: int, variant: str) -> Optional[dict]:
        path = self.run(replicate, level, variant).result
        return files.read_json(path) if os.path.exists(path) else None

    def iterations_spent(self, replicate: int, level: int, variant: str) -> int:
        """The training iterations it took to produce that run's network: its own and its mask's
        (experiment.results.add_costs)."""
        return int(self._cost_row(replicate, level, variant)["iterations_spent"])

    def mask_iterations(self, replicate: int, level: int, variant: str) -> int:
        """The training iterations its mask needed (0 at level 0)."""
        row = self._cost_row(replicate, level, variant)
        return int(row["iterations_spent"]) - int(row["iterations_trained"])

    def _cost_row(self, replicate: int, level: int, variant: str) -> dict:
        self.require_finished(replicate, level, variant)
        row = next(r for r in self.rows() if (r["replicate"], r["level"], r["variant"]) == (replicate, level, variant))
        if row["iterations_spent"] is None:
            raise UnfinishedRun(f"replicate {replicate} level {level} {variant} of {self.paths.root}: a run its mask "
                                "was computed from has not finished, so its cost is unknown")
        return row

    def finished(self, replicate: int, level: int, variant: str) -> bool:
        return os.path.exists(self.run(replicate, level, variant).result)

    def finished_levels(self, replicate: int, variant: str) -> List[int]:
        return sorted(int(r["level"]) for r in self.rows() if int(r["replicate"]) == replicate and r["variant"] == variant)

    def require_finished(self, replicate: int, level: int, variant: str):
        """Raises UnfinishedRun, naming what has finished, unless the run has."""
        if self.finished(replicate, level, variant):
            return
        levels = self.finished_levels(replicate, variant)
        raise UnfinishedRun(f"replicate {replicate} level {level} {variant} of {self.paths.root} has not finished "
                            f"(finished {variant} levels of replicate {replicate}: {spans(levels) or 'none'})")

    def unfinished_runs(self) -> List[Tuple[int, int, str, int]]:
        """(replicate, level, run, last logged iteration) of runs started and not finished;
        a branch's run is named '<branch folder>/<run>'."""
        found = []
        for directory in self.paths.run_folders("metrics.csv"):
            parsed = parse_run_folder(directory)
            if parsed is None or os.path.exists(RunPaths(directory).result):
                continue
            replicate, level, branch, name = parsed
            metrics = RunPaths(directory).metrics
            iterations = results.curve(metrics, "train", "loss") or results.curve(metrics)
            found.append((replicate, level, f"{branch}/{name}" if branch else name, max(iterations, default=0)))
        return found

    # Arrays -------------------------------------------------------------------

    def masks(self, replicate: int, level: int, variant: str) -> files.Masks:
        self.require_finished(replicate, level, variant)
        return files.read_masks(self.run(replicate, level, variant).mask, recover=self._redo(replicate, level, variant))

    def final_weights(self, replicate: int, level: int, variant: str) -> List[np.ndarray]:
        self.require_finished(replicate, level, variant)
        path = self.run(replicate, level, variant).final_weights
        return files.read_weights(path, recover=self._redo(replicate, level, variant))

    def theta_init(self, replicate: int) -> List[np.ndarray]:
        return self._theta(self.paths.theta_init(replicate), replicate)

    def theta_rewind(self, replicate: int) -> List[np.ndarray]:
        return self._theta(self.paths.theta_rewind(replicate), replicate)

    def dense_weights_at(self, replicate: int, iteration: int) -> str:
        """The file holding the dense run's weights after `iteration` iterations: θ0, θk
        (the experiment's rewind point) or a replay's; it may not exist yet (see
        branches.base.Branch.replay_dense)."""
        if iteration == 0:
            return self.paths.theta_init(replicate)
        rewind = self.paths.theta_rewind(replicate)
        if iteration == self.config.pruning.rewind_iteration and os.path.exists(rewind):
            return rewind
        return self.paths.theta_at(replicate, iteration)

    def data_seed_of(self, replicate: int, level: int, variant: str) -> int:
        """The data seed a run trained with (run.json, or the rule runs followed before it)."""
        run = self.run(replicate, level, variant)
        if os.path.exists(run.spec):
            return int(files.read_json(run.spec, recover=self._redo(replicate, level, variant))["data_seed"])
        return self.config.data_seed(replicate)

    def start_of(self, replicate: int, level: int, variant: str) -> Tuple[str, str, int]:
        """(initial weights file, its label, start iteration) of a run.

        Runs record their start in run.json; for runs written before it existed the
        rule they followed applies: θ0 from iteration 0, or θk from iteration k for
        pruned levels with --rewind_iteration.
        """
        self.require_finished(replicate, level, variant)
        run = self.run(replicate, level, variant)
        if os.path.exists(run.spec):
            record = files.read_json(run.spec, recover=self._redo(replicate, level, variant))
            init = record["init"]
            return os.path.join(self.paths.root, init["file"]), init["label"], int(record["start_iteration"])
        if variant == "reinit":
            raise UsageError("--variant: this reinit run was trained before runs stored their initial weights; "
                             "train it again with tf_lottery.branch --branch=reinit")
        rewind = self.config.pruning.rewind_iteration if level > 0 else 0
        if rewind:
            return self.paths.theta_rewind(replicate), "theta_rewind", rewind
        return self.paths.theta_init(replicate), "theta_0", 0

    def initial_weights(self, replicate: int, level: int, variant: str) -> Tuple[List[np.ndarray], List[str], str]:
        """(values, variable names, label) of the weights the run started from (see start_of)."""
        path, label, _ = self.start_of(replicate, level, variant)
        if not os.path.exists(path):
            raise UsageError(f"{path} is missing: the initial weights of replicate {replicate} level {level} {variant} are gone")
        recover = f"the run's initial weights cannot be recomputed; {self._redo(replicate, level, variant)}"
        return files.read_weights(path, recover), files.read_weight_names(path, recover), label

    def _theta(self, path: str, replicate: int) -> List[np.ndarray]:
        if not os.path.exists(path):
            raise UsageError(f"{path} is missing: replicate {replicate} has not trained that far")
        return files.read_weights(path, recover=f"delete {self.paths.replicate(replicate)} to start that replicate again")

    def _redo(self, replicate: int, level: int, variant: str) -> str:
        return f"delete {self.run(replicate, level, variant).directory} to train that run again"

    # Selection ----------------------------------------------------------------

    def best_level(self, variant: str = "imp", replicate: Optional[int] = None,
                   tolerance: Optional[float] = None) -> int:
        """The sparsest level still matching level 0 in the task's metric (experiment.selection.best_level;
        tolerance None: the task's default)."""
        return selection.best_level(self.rows(), tolerance, variant, replicate, tasks.of(self.dataset))

    def resolve_level(self, level, replicate: int, variant: str, tolerance: Optional[float] = None) -> int:
        """A level number, 'final' (the last finished level) or 'best', checked to have finished."""
        rows = self.rows()
        replicates = sorted({int(r["replicate"]) for r in rows})
        if replicate not in replicates:
            raise UnfinishedRun(f"--replicate: no finished run of replicate {replicate} in {self.paths.root} "
                                f"(finished replicates: {', '.join(map(str, replicates)) or 'none'})")
        levels = self.finished_levels(replicate, variant)
        if not levels:
            variants = sorted({r["variant"] for r in rows})
            raise UnfinishedRun(f"--variant: no finished {variant!r} run in {self.paths.root} "
                                f"(finished variants: {', '.join(variants)})")
        if level == "final":
            return levels[-1]
        if level == "best":
            try:
                return self.best_level(variant, replicate, tolerance)
            except selection.NoMatchingLevel as error:
                raise selection.NoMatchingLevel(f"--level=best: {error}") from None
        try:
            number = int(level)
        except (TypeError, ValueError):
            raise UsageError(f"--level: expected a level number, 'best' or 'final', got {level!r}") from None
        if number not in levels:
            raise UnfinishedRun(f"--level: level {number} of {variant} replicate {replicate} has not finished "
                                f"(finished levels: {spans(levels)})")
        return number

