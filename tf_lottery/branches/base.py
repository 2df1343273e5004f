"""The base of every branch: an analysis or a new kind of run over a finished IMP experiment.

A branch is a subclass of Branch in a file of its own under tf_lottery/branches/,
registered with @branches.register. It declares:

  name       the --branch value;
  Options    a frozen dataclass of `config.option()` fields: its flags, help,
             validation (an optional `validate()`) and hash come free;
  runs(cell) the RunSpecs to train for one (replicate, level, variant) of the parent;
  measure()  its table rows once they have trained (default: one row per run).

It reads the parent only through `self.parent` (experiment.reader.Experiment) and
writes only where `self.folder(cell)` says: replicate_<r>/level_<LL>/branch_<name>_<hash>/.
The hash covers its options and the main-command flags given to override the
parent's settings (`self.config` is the parent's config with them applied).
"""

import dataclasses
from typing import ClassVar, Dict, List, Mapping, Optional, Tuple

from tf_lottery import config as config_lib
from tf_lottery.experiment import results
from tf_lottery.experiment.paths import BranchPaths
from tf_lottery.experiment.reader import Experiment
from tf_lottery.training.hooks import Hook
from tf_lottery.training.run import InitialWeights, RunSpec
from tf_lottery.utils import derive_seed

# What the default measure() copies from each run's result.json into the branch table.
MEASURED = ("final_test_accuracy", "early_stop_iteration", "early_stop_test_accuracy", "best_val_accuracy",
            "final_validation_accuracy", "final_test_loss", "train_seconds")


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A branch without options of its own."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (replicate, level, variant) of the parent experiment that a branch works from."""

    replicate: int
    level: int
    variant: str


class Branch:
    """Builds runs from a parent experiment's cells and measures them."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    columns: ClassVar[Tuple[str, ...]] = ("run",) + MEASURED  # its table's own columns
    pruned_levels_only: ClassVar[bool] = False  # True: level 0 (dense) gives it nothing to do
    prunes: ClassVar[bool] = False  # whether the --prune_* flags mean anything to it

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

    def hooks(self, spec: RunSpec) -> List[Hook]:
        """Hooks for one of its runs (none by default)."""
        del spec
        return []

    def measure(self, cell: Cell, finished: Dict[str, dict], bench) -> List[dict]:
        """Its table rows for `cell` from {run name: result.json}; bench gives TensorFlow work a home."""
        del cell, bench
        return [{"run": name, "density": result["density"], **{k: result.get(k) for k in MEASURED}}
                for name, result in finished.items()]

    # What it gets -------------------------------------------------------------

    def hashed_values(self) -> Dict:
        options = {f.name: config_lib.canonical(getattr(self.options, f.name))
                   for f in dataclasses.fields(self.options)
                   if f.metadata.get("hashed", True) and getattr(self.options, f.name) != f.default}
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

    def spec(self, cell: Cell, name: str, masks, init: InitialWeights, start_iteration: int,
             data_seed: Optional[int] = None) -> RunSpec:
        """A run of this branch named `name` in the cell's folder, with the branch's settings."""
        return RunSpec(
            directory=self.folder(cell).run(name).directory, config=self.config, replicate=cell.replicate,
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

    def table_columns(self) -> Tuple[str, ...]:
        options = tuple(f.name for f in dataclasses.fields(self.Options))
        own = tuple(c for c in self.columns if c not in results.BRANCH_COLUMNS)
        return results.BRANCH_COLUMNS + options + own
