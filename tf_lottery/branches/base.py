"""The base of every branch: an analysis or a new kind of run over a finished IMP experiment.

A branch is a subclass of Branch in a file of its own under tf_lottery/branches/,
registered with @branches.register. It declares:

  name       the --branch value;
  Options    a frozen dataclass of `config.option()` fields: its flags, help,
             validation (an optional `validate()`) and hash come free;
  runs(cell) the RunSpecs to train for one (replicate, level, variant) of the parent;
  measure()  its table rows once they have trained (default: one row per run).

and, when it needs them:

  parts(cell)    the cell split into independent parts, each measured on its own
                 (the stability branch: one part per rewind iteration and pair kind);
                 options listed in `part_options` choose the parts, so they stay out
                 of the hash and the table and asking for more parts adds to a folder;
  prepare(cell)  work its runs need done first, e.g. weights replayed from the parent;
  check(cells)   refusals that need the chosen cells, before anything is written.

Options with `hashed=False` change only what measure() computes: a finished cell
whose rows were measured with other values is measured again, never retrained.

It reads the parent only through `self.parent` (experiment.reader.Experiment) and
writes only where `self.folder(cell)` says: replicate_<r>/level_<LL>/branch_<name>_<hash>/.
The hash covers its options and the main-command flags given to override the
parent's settings (`self.config` is the parent's config with them applied).
"""

import dataclasses
import os
import shutil
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple

from tf_lottery import config as config_lib
from tf_lottery.experiment import results
from tf_lottery.experiment.paths import BranchPaths
from tf_lottery.experiment.reader import Experiment
from tf_lottery.pruning.retraining import retraining_config
from tf_lottery.training import run as run_lib
from tf_lottery.training.hooks import Hook, SaveWeightsAt
from tf_lottery.training.run import InitialWeights, RunSpec
from tf_lottery.utils import derive_seed

# What the default measure() copies from each run's result.json into the branch table.
MEASURED = ("final_test_accuracy", "early_stop_iteration", "early_stop_test_accuracy", "best_val_accuracy",
            "final_validation_accuracy", "final_test_loss", "train_seconds", "iterations_trained")


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A branch without options of its own."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (replicate, level, variant) of the parent experiment that a branch works from,
    or one part of it (`part`: what Branch.parts put there)."""

    replicate: int
    level: int
    variant: str
    part: Any = None


class Branch:
    """Builds runs from a parent experiment's cells and measures them."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    columns: ClassVar[Tuple[str, ...]] = ("run",) + MEASURED + ("iterations_spent",)  # its table's own columns
    pruned_levels_only: ClassVar[bool] = False  # True: level 0 (dense) gives it nothing to do
    prunes: ClassVar[bool] = False  # whether the --prune_* flags mean anything to it
    part_options: ClassVar[Tuple[str, ...]] = ()  # options that choose parts (see parts())
    # True: the runs of a cell do not read each other, so --parallel_runs may train them side by side.
    independent_runs: ClassVar[bool] = False
    new_classes: ClassVar[bool] = False  # True: it builds runs for a target with another class count

    def __init__(self, parent: Experiment, options=None, overrides: Optional[Mapping] = None):
        self.parent = parent
        self.options = options if options is not None else self.Options()
        config_lib.check_int64(self.options)
        if hasattr(self.options, "validate"):
            self.options.validate()
        flat = parent.config.flat()
        # Only values that differ from the parent's change what the branch computes.
        self.overrides = {k: v for k, v in (overrides or {}).items() if flat.get(k) != v}
        self.config = parent.config.replace(**self.overrides) if self.overrides else parent.config
        self.hash = config_lib.digest(self.hashed_values())

    # What a branch defines ----------------------------------------------------

    def runs(self, cell: Cell) -> List[RunSpec]:
        """The runs to train for `cell`, each with a directory under self.folder(cell)."""
        raise NotImplementedError

    def parts(self, cell: Cell) -> List[Cell]:
        """The independent parts of `cell`, each trained and measured on its own (default: one)."""
        return [cell]

    def required_run(self, cell: Cell) -> Tuple[int, int, str]:
        """The parent's run that must have finished for `cell` (default: the cell's own)."""
        return cell.replicate, cell.level, cell.variant

    def key(self, cell: Cell) -> str:
        """A name for a part, unique within its branch folder (default: the variant)."""
        return cell.variant

    def check(self, cells: List[Cell]):
        """Refuses, with a UsageError, cells it cannot compute: called on every chosen cell before
        anything is written (nothing to check by default)."""
        del cells

    def prepare(self, cell: Cell, bench):
        """Work the cell's runs need before they train (nothing by default)."""
        del cell, bench

    def hooks(self, spec: RunSpec) -> List[Hook]:
        """Hooks for one of its runs (none by default)."""
        del spec
        return []

    def measure(self, cell: Cell, finished: Dict[str, dict], bench) -> List[dict]:
        """Its table rows for `cell` from {run name: result.json}; bench gives TensorFlow work a home."""
        del bench
        return [{"run": name, "density": result["density"], **{k: result.get(k) for k in MEASURED},
                 "iterations_spent": self.iterations_spent(cell, result)}
                for name, result in finished.items()]

    # What it gets -------------------------------------------------------------

    def iterations_spent(self, cell: Cell, *results: dict) -> int:
        """The training iterations it took to produce a network of this cell: those the parent's
        mask of the cell needed, plus each of `results`' own (the runs that led to the network).
        The controls' masks come from the level's imp mask, so they cost what it did (also for
        controls a branch derives itself)."""
        return (self.parent.mask_iterations(cell.replicate, cell.level, "imp")
                + sum(int(r["iterations_trained"]) for r in results))

    def hashed_values(self) -> Dict:
        options = {f.name: config_lib.canonical(getattr(self.options, f.name))
                   for f in dataclasses.fields(self.options)
                   if f.metadata.get("hashed", True) and f.name not in self.part_options
                   and getattr(self.options, f.name) != f.default}
        overrides = {k: config_lib.canonical(v) for k, v in self.overrides.items()
                     if k in config_lib.HASHED}
        return {"options": options, "overrides": overrides}

    def folder(self, cell: Cell) -> BranchPaths:
        return self.parent.paths.branch(cell.replicate, cell.level, self.name, self.hash)

    def seed(self, cell: Cell) -> int:
        """The parent replicate's seed."""
        return self.parent.config.run.seed + cell.replicate

    def cell_seed(self, cell: Cell, purpose: str) -> int:
        """A seed for `purpose` in `cell`; the imp variant's is the one --controls always used."""
        parts = (purpose, cell.level) if cell.variant == "imp" else (purpose, cell.level, cell.variant)
        return derive_seed(self.seed(cell), *parts)

    def parent_start(self, cell: Cell) -> Tuple[InitialWeights, int]:
        """(initial weights, start iteration) of the parent's run of `cell`."""
        path, label, start = self.parent.start_of(cell.replicate, cell.level, cell.variant)
        return InitialWeights.from_file(path, label), start

    def dense_start(self, replicate: int, iteration: int) -> InitialWeights:
        """The dense run's weights after `iteration` iterations (θ0, θk or a replay's; see replay_dense)."""
        label = "theta_0" if iteration == 0 else f"theta_at_{iteration}"
        return InitialWeights.from_file(self.parent.dense_weights_at(replicate, iteration), label)

    def replay_dense(self, replicate: int, iterations, bench):
        """Puts the dense run's weights after each of `iterations` on disk, by replaying the
        parent's level-0 run once up to the latest missing one (its data order, θ0 and
        settings; bit for bit the same under --deterministic). Resumable like any run."""
        parent = self.parent
        missing = sorted({k for k in iterations if k > 0 and not os.path.exists(parent.dense_weights_at(replicate, k))})
        folder = parent.paths.replay(replicate).directory
        if not missing:
            return
        if bench.is_chief and os.path.exists(os.path.join(folder, "result.json")):
            shutil.rmtree(folder)  # a finished replay left behind: it stopped before these
        path, label, start = parent.start_of(replicate, 0, "imp")
        config = parent.config.replace(progress=self.config.run.progress)
        spec = RunSpec(directory=folder, config=config, replicate=replicate, level=0, name="replay",
                       masks=parent.masks(replicate, 0, "imp"), init=InitialWeights.from_file(path, label),
                       start_iteration=start, data_seed=parent.data_seed_of(replicate, 0, "imp"),
                       stop_iteration=missing[-1])
        run_lib.train(spec, bench, [SaveWeightsAt(k, parent.dense_weights_at(replicate, k)) for k in missing])
        if bench.is_chief:
            shutil.rmtree(folder, ignore_errors=True)

    def spec(self, cell: Cell, name: str, masks, init: InitialWeights, start_iteration: int,
             data_seed: Optional[int] = None) -> RunSpec:
        """A run of this branch named `name` in the cell's folder, with the branch's settings (retrained
        at a pruned level as the experiment's --retrain says)."""
        return RunSpec(
            directory=self.folder(cell).run(name).directory, config=retraining_config(self.config, cell.level),
            replicate=cell.replicate,
            level=cell.level, name=name, masks=masks, init=init, start_iteration=start_iteration,
            data_seed=self.config.data_seed(cell.replicate) if data_seed is None else data_seed)

    def record(self, cell: Cell) -> Dict:
        """branch.json: the branch, its settings and the parent it was computed from."""
        return {
            "branch": self.name, "hash": self.hash, "options": dataclasses.asdict(self.options),
            "overrides": self.hashed_values()["overrides"],
            "replicate": cell.replicate, "level": cell.level,
            "parent": {"experiment": self.parent.name, "fingerprint": self.parent.config.fingerprint(),
                       "experiment_hash": self.parent.config.experiment_hash()},
        }

    def measured_options(self) -> Dict:
        """The options every row records: all but those choosing parts."""
        return {f.name: getattr(self.options, f.name) for f in dataclasses.fields(self.options)
                if f.name not in self.part_options}

    def table_columns(self) -> Tuple[str, ...]:
        options = tuple(f.name for f in dataclasses.fields(self.Options) if f.name not in self.part_options)
        own = tuple(c for c in self.columns if c not in results.BRANCH_COLUMNS)
        return results.BRANCH_COLUMNS + options + own
