"""A toy branch defined outside the package: two copies of the parent's run with other data orders.

Run as a script it is tf_lottery.branch with the toy registered, so tests can kill it.
"""

import dataclasses
import sys

import numpy as np

from tf_lottery import branch as branch_cli  # the command (TensorFlow-free until a branch is needed)
from tf_lottery import branches
from tf_lottery.branches.base import Branch
from tf_lottery.config import ConfigError, option
from tf_lottery.experiment import files
from tf_lottery.training.hooks import Hook
from tf_lottery.utils import derive_seed


@dataclasses.dataclass(frozen=True)
class ToyOptions:
    copies: int = option(2, "Copies of the parent's run, each with its own data order.")

    def validate(self):
        if self.copies < 1:
            raise ConfigError(f"--copies: must be >= 1, got {self.copies}")


class CountEvaluations(Hook):
    """Records at which iterations the run was evaluated, into its result."""

    every = 7

    def __init__(self):
        self.evaluated, self.stops = [], []

    def at_stop(self, run, iteration):
        if iteration % self.every == 0:
            self.stops.append(iteration)

    def on_evaluation(self, run, iteration, values):
        self.evaluated.append(iteration)

    def on_end(self, run, result):
        result["evaluated_at"], result["every_7"] = self.evaluated, self.stops


@branches.register
class Toy(Branch):
    name = "toy"
    description = "copies of the parent's run with other data orders"
    Options = ToyOptions
    columns = ("run", "final_test_accuracy", "distance")

    def runs(self, cell):
        init, start = self.parent_start(cell)
        masks = self.parent.masks(cell.replicate, cell.level, cell.variant)
        return [self.spec(cell, f"{cell.variant}_{copy}", masks, init, start,
                          data_seed=derive_seed(self.seed(cell), "toy", copy)) for copy in range(self.options.copies)]

    def hooks(self, spec):
        return [CountEvaluations()]

    def measure(self, cell, finished, bench):
        names = sorted(finished)
        weights = [files.read_weights(self.folder(cell).run(n).final_weights) for n in names]
        distance = float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(weights[0], weights[-1]))))
        return [{"run": n, "density": finished[n]["density"], "final_test_accuracy": finished[n]["final_test_accuracy"],
                 "distance": distance} for n in names]


if __name__ == "__main__":
    sys.exit(branch_cli.main(sys.argv))
