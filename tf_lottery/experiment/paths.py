"""Where an experiment's files live: the one place the layout is written down.

<output_dir>/<experiment_name>/
  flags.cfg  config.json  dataset.json  results.csv  branches/<branch>.csv
  replicate_<r>/theta_0.npz  theta_rewind.npz
  replicate_<r>/theta_at_<k>.npz                               the dense run's weights after k
                                                               iterations, replayed when a branch needs them
  replicate_<r>/replay/                                        that replay while it trains
  replicate_<r>/level_<LL>/<variant>/                          one run of the IMP loop
  replicate_<r>/level_<LL>/branch_<branch>_<hash>/branch.json  one branch over that level
  replicate_<r>/level_<LL>/branch_<branch>_<hash>/<run>/       a run the branch trained

A run folder holds run.json (its spec), mask.npz, final_weights.npz, metrics.csv,
result.json, TensorBoard events, checkpoints/ while it trains, and
initial_weights.npz when it started from weights no other file holds.
"""

import dataclasses
import glob
import os
import re
from typing import List, Optional, Tuple

BRANCH_PREFIX = "branch_"
_RUN = re.compile(r"replicate_(\d+)[/\\]level_(\d+)[/\\](?:(branch_[A-Za-z0-9_]+?_[0-9a-f]{8})[/\\])?([A-Za-z0-9_.-]+)$")


@dataclasses.dataclass(frozen=True)
class RunPaths:
    directory: str

    def _file(self, name: str) -> str:
        return os.path.join(self.directory, name)

    @property
    def spec(self):
        return self._file("run.json")

    @property
    def mask(self):
        return self._file("mask.npz")

    @property
    def initial_weights(self):
        return self._file("initial_weights.npz")

    @property
    def final_weights(self):
        return self._file("final_weights.npz")

    @property
    def metrics(self):
        return self._file("metrics.csv")

    @property
    def result(self):
        return self._file("result.json")

    @property
    def checkpoints(self):
        return self._file("checkpoints")

    @property
    def lock(self):
        return self._file("run.lock")


@dataclasses.dataclass(frozen=True)
class BranchPaths:
    directory: str

    @property
    def spec(self):
        return os.path.join(self.directory, "branch.json")

    def run(self, name: str) -> RunPaths:
        return RunPaths(os.path.join(self.directory, name))


def stability_part(variant: str, pair: str, rewind_iteration: int) -> str:
    """The name of one pair of the stability branch in its folder: its copies are
    <part>_copy0 and <part>_copy1, its rows rows_<part>.json, its curve interpolation_<part>.csv."""
    return f"{variant}_{pair}_k{rewind_iteration}"


def interpolation_file(branch_directory: str, part: str) -> str:
    return os.path.join(branch_directory, f"interpolation_{part}.csv")


def branch_folder(branch: str, options_hash: str) -> str:
    return f"{BRANCH_PREFIX}{branch}_{options_hash}"


@dataclasses.dataclass(frozen=True)
class ExperimentPaths:
    root: str

    @classmethod
    def of(cls, output_dir: str, experiment_name: str) -> "ExperimentPaths":
        return cls(os.path.join(output_dir, experiment_name))

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.root))

    @property
    def flags(self):
        return os.path.join(self.root, "flags.cfg")

    @property
    def config(self):
        return os.path.join(self.root, "config.json")

    @property
    def dataset(self):
        return os.path.join(self.root, "dataset.json")

    @property
    def results(self):
        return os.path.join(self.root, "results.csv")

    def branch_table(self, branch: str) -> str:
        return os.path.join(self.root, "branches", f"{branch}.csv")

    def replicate(self, replicate: int) -> str:
        return os.path.join(self.root, f"replicate_{replicate}")

    def theta_init(self, replicate: int) -> str:
        return os.path.join(self.replicate(replicate), "theta_0.npz")

    def theta_rewind(self, replicate: int) -> str:
        return os.path.join(self.replicate(replicate), "theta_rewind.npz")

    def theta_at(self, replicate: int, iteration: int) -> str:
        """The dense run's weights after `iteration` iterations, when replayed for a branch."""
        return os.path.join(self.replicate(replicate), f"theta_at_{iteration}.npz")

    def replay(self, replicate: int) -> RunPaths:
        """The folder of a replay of the dense run while it trains (removed when done)."""
        return RunPaths(os.path.join(self.replicate(replicate), "replay"))

    def level(self, replicate: int, level: int) -> str:
        return os.path.join(self.replicate(replicate), f"level_{level:02d}")

    def run(self, replicate: int, level: int, variant: str) -> RunPaths:
        return RunPaths(os.path.join(self.level(replicate, level), variant))

    def branch(self, replicate: int, level: int, branch: str, options_hash: str) -> BranchPaths:
        return BranchPaths(os.path.join(self.level(replicate, level), branch_folder(branch, options_hash)))

    def result_files(self) -> List[str]:
        """result.json of every finished run of the IMP loop (branch runs excluded)."""
        found = glob.glob(os.path.join(self.root, "replicate_*", "level_*", "*", "result.json"))
        return sorted(p for p in found if not os.path.basename(os.path.dirname(p)).startswith(BRANCH_PREFIX))

    def run_folders(self, pattern: str = "metrics.csv") -> List[str]:
        """Run folders (IMP loop and branches) holding a file named `pattern`."""
        found = glob.glob(os.path.join(self.root, "replicate_*", "level_*", "*", pattern))
        found += glob.glob(os.path.join(self.root, "replicate_*", "level_*", f"{BRANCH_PREFIX}*", "*", pattern))
        return sorted(os.path.dirname(p) for p in found)


def parse_run_folder(directory: str) -> Optional[Tuple[int, int, Optional[str], str]]:
    """(replicate, level, branch folder or None, run name) of a run folder, None if it is not one."""
    match = _RUN.search(os.path.normpath(directory))
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), match.group(3), match.group(4)
