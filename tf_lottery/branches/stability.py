"""stability: instability analysis and linear mode connectivity (Frankle et al. 2019, 2020).

For a cell's mask m and each rewind point k, two copies are trained from m ⊙ θk to
the end of the schedule (which continues from k), identical but for their data
order: θk is the dense run's weights after k iterations (θ0 for k = 0), replayed
from the parent's level-0 run when the experiment never saved them. `--pair=init`
trains two copies from two fresh random initialisations with the same mask instead
(and their own data orders): two unrelated networks, the usual non-connected baseline.

Along W(α) = α·W1 + (1-α)·W2 at --interpolation_points values of α in [0, 1] it
measures test error, training error (on a fixed subset of the training split) and
loss. Instability is the error barrier: max over α of the error minus the mean of
the two endpoints' errors (Frankle et al. 2020, section 2); a pair is stable below
--stable_threshold (their 2%).

The controls of Frankle et al. 2020 (section 5) need only the parent's imp run:
random_prune is the imp mask's per-weight densities at random positions, from θk;
reinit is the imp mask from a fresh random draw, its schedule from k. Where the
parent trained the control (--controls) its mask and draw are used; otherwise they
are drawn with the seeds the IMP loop's controls use, so they are the same.
"""

import csv
import dataclasses
from typing import Dict, List, Tuple

import numpy as np

from tf_lottery import branches
from tf_lottery.branches.base import Branch, Cell
from tf_lottery.config import ConfigError, option
from tf_lottery.errors import UsageError
from tf_lottery.data import pipeline
from tf_lottery.experiment import files, paths
from tf_lottery.pruning import strategies
from tf_lottery.training import interpolation
from tf_lottery.training.run import InitialWeights
from tf_lottery.utils import atomic_path, derive_seed

PAIRS = ("data", "init")
CONTROLS = ("reinit", "random_prune")
TRAIN_SUBSET_SEED = 0  # the training-error subset is the same for every cell and experiment seed
BATCHNORM_SEED = 1


@dataclasses.dataclass(frozen=True)
class StabilityOptions:
    rewind_iterations: Tuple[int, ...] = option(
        (), "Rewind points k: the copies start from the dense run's weights after k iterations (θ0 for 0), "
        "replayed when the experiment did not save them (default: the experiment's --rewind_iteration).", hashed=False)
    pair: str = option("data", "data: two copies from the same weights with different data orders (stability to SGD "
                       "noise); init: two copies from different random initialisations with the same mask.",
                       choices=PAIRS, hashed=False)
    interpolation_points: int = option(30, "Points on the line between the copies, alpha from 0 to 1 inclusive.",
                                       hashed=False)
    train_eval_examples: int = option(10000, "Examples of the training split (a fixed subset) on which training "
                                      "error is measured along the line (0: none).", hashed=False)
    batchnorm: str = option("interpolate", "BatchNorm moving statistics along the line: interpolate them like every "
                            "variable, or recompute them at each point on --batchnorm_batches training batches.",
                            choices=("interpolate", "recompute"), hashed=False)
    batchnorm_batches: int = option(10, "Training batches (of --batch_size, unaugmented) that recompute BatchNorm "
                                    "statistics with --batchnorm=recompute.", hashed=False)
    stable_threshold: float = option(0.02, "A pair is stable when its test instability is below this (a fraction).",
                                     hashed=False)
    matching_tolerance: float = option(0.005, "A pair matches when its copies' mean test accuracy is within this of "
                                       "the dense network's.", hashed=False)

    def validate(self):
        if any(k < 0 for k in self.rewind_iterations):
            raise ConfigError(f"--rewind_iterations: must be >= 0, got {','.join(map(str, self.rewind_iterations))}")
        if len(set(self.rewind_iterations)) != len(self.rewind_iterations):
            raise ConfigError("--rewind_iterations: lists an iteration twice")
        if self.pair == "init" and any(self.rewind_iterations):
            raise ConfigError("--rewind_iterations: --pair=init trains fresh initialisations from iteration 0; "
                              "rewind points do not apply")
        if self.interpolation_points < 2:
            raise ConfigError(f"--interpolation_points: must be >= 2 (both ends), got {self.interpolation_points}")
        if self.train_eval_examples < 0:
            raise ConfigError(f"--train_eval_examples: must be >= 0, got {self.train_eval_examples}")
        if self.batchnorm_batches < 1:
            raise ConfigError(f"--batchnorm_batches: must be >= 1, got {self.batchnorm_batches}")
        if not 0 < self.stable_threshold < 1:
            raise ConfigError(f"--stable_threshold: must be in (0, 1), got {self.stable_threshold}")
        if not 0 <= self.matching_tolerance < 1:
            raise ConfigError(f"--matching_tolerance: must be in [0, 1), got {self.matching_tolerance}")


@dataclasses.dataclass(frozen=True)
class Pair:
    """One part of a cell: the pair kind and the rewind point its copies start from."""

    kind: str
    k: int


COLUMNS = ("density", "rewind_iteration", "pair", "instability_test", "instability_train", "endpoint_test_error",
           "max_test_error", "endpoint_train_error", "max_train_error", "l2_distance", "disagreement",
           "pruning_distance", "stable", "matching", "dense_test_accuracy", "iterations_spent")


@branches.register
class Stability(Branch):
    name = "stability"
    independent_runs = True  # the two copies
    description = "two copies from the same weights with different data orders, and the error along the line between them"
    Options = StabilityOptions
    columns = COLUMNS
    part_options = ("rewind_iterations", "pair")

    def __init__(self, parent, options=None, overrides=None):
        super().__init__(parent, options, overrides)
        iterations = self.config.training.iterations
        late = [k for k in self.rewind_points() if k >= iterations]
        if late:
            raise UsageError(f"--rewind_iterations: {late[0]} is not before the end of training ({iterations} iterations)")

    def rewind_points(self) -> Tuple[int, ...]:
        if self.options.pair == "init":
            return (0,)
        return self.options.rewind_iterations or (self.parent.config.pruning.rewind_iteration,)

    # Parts and runs -----------------------------------------------------------

    def parts(self, cell: Cell) -> List[Cell]:
        return [dataclasses.replace(cell, part=Pair(self.options.pair, k)) for k in self.rewind_points()]

    def key(self, cell: Cell) -> str:
        return paths.stability_part(cell.variant, cell.part.kind, cell.part.k)

    def copy_data_seed(self, cell: Cell, copy: int) -> int:
        """Copy `copy`'s data order: the same for every level, variant and k of a replicate."""
        return derive_seed(self.parent.data_seed_of(cell.replicate, 0, "imp"), "stability_copy", copy)

    def required_run(self, cell: Cell):
        if cell.variant in CONTROLS:
            return cell.replicate, cell.level, "imp"  # the controls derive from the ticket
        return super().required_run(cell)

    def _in_parent(self, cell: Cell) -> bool:
        return self.parent.finished(cell.replicate, cell.level, cell.variant)

    def cell_masks(self, cell: Cell):
        """The cell's mask: the parent run's, or for a control the parent never trained, derived from imp's."""
        if cell.variant == "imp" or self._in_parent(cell):
            return self.parent.masks(cell.replicate, cell.level, cell.variant)
        ticket = self.parent.masks(cell.replicate, cell.level, "imp")
        if cell.variant == "random_prune":
            return strategies.random_masks(ticket, self.cell_seed(dataclasses.replace(cell, variant="imp"), "random_prune"))
        return ticket

    def starts(self, cell: Cell) -> List[InitialWeights]:
        """The two copies' initial weights."""
        if cell.part.kind == "init":
            return [InitialWeights.fresh(derive_seed(self.cell_seed(cell, "stability_init"), copy)) for copy in (0, 1)]
        if cell.variant == "reinit":
            if self._in_parent(cell):
                path, label, _ = self.parent.start_of(cell.replicate, cell.level, cell.variant)
                return [InitialWeights.from_file(path, label)] * 2
            return [InitialWeights.fresh(self.cell_seed(dataclasses.replace(cell, variant="imp"), "reinit"))] * 2
        return [self.dense_start(cell.replicate, cell.part.k)] * 2

    def runs(self, cell: Cell):
        masks = self.cell_masks(cell)
        return [self.spec(cell, f"{self.key(cell)}_copy{copy}", masks, init, cell.part.k,
                          data_seed=self.copy_data_seed(cell, copy))
                for copy, init in enumerate(self.starts(cell))]

    def prepare(self, cell: Cell, bench):
        if cell.part.kind == "data" and cell.variant != "reinit":
            self.replay_dense(cell.replicate, self.rewind_points(), bench)

    # Measuring ----------------------------------------------------------------

    def interpolation_file(self, cell: Cell) -> str:
        return paths.interpolation_file(self.folder(cell).directory, self.key(cell))

    def measure(self, cell: Cell, finished: Dict[str, dict], bench) -> List[dict]:
        names = [spec.name for spec in self.runs(cell)]
        folder = self.folder(cell)
        w1, w2 = (files.read_weights(folder.run(n).final_weights, recover=f"delete {folder.run(n).directory} to "
                                     "train that copy again") for n in names)
        masks = self.cell_masks(cell)
        dense = self.parent.result(cell.replicate, 0, "imp")
        dense_final = self.parent.final_weights(cell.replicate, 0, "imp")
        curve, summary = measure_line(self.config, self.options, bench, masks, w1, w2, dense_final)
        if bench.is_chief:
            write_curve(self.interpolation_file(cell), curve)
        o = self.options
        endpoint_accuracy = 1.0 - summary["endpoint_test_error"]
        return [{
            "density": finished[names[0]]["density"], "rewind_iteration": cell.part.k, "pair": cell.part.kind,
            **summary,
            "stable": bool(summary["instability_test"] < o.stable_threshold),
            "matching": bool(endpoint_accuracy >= dense["final_test_accuracy"] - o.matching_tolerance),
            "dense_test_accuracy": dense["final_test_accuracy"],
            # the pair's mask and both copies (θk's first k iterations are the dense run's, counted in its level 0)
            "iterations_spent": self.iterations_spent(cell, *finished.values()),
        }]


def _subset(count: int, total: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(total)[:min(count, total)])


def measure_line(config, options: StabilityOptions, bench, masks, w1, w2, dense_final) -> Tuple[List[dict], dict]:
    """(the curve's rows, the pair's summary values) for copies with final weights w1 and w2."""
    model = bench.trainer(config).model
    line = interpolation.Line(model, masks)
    splits = bench.splits(config)
    info, batch = splits.info, config.data.eval_batch_size
    sets = {"test": pipeline.evaluation_dataset(splits.test_images, splits.test_labels, info, batch)}
    if options.train_eval_examples:
        chosen = _subset(options.train_eval_examples, len(splits.train_images), TRAIN_SUBSET_SEED)
        sets["train"] = pipeline.evaluation_dataset(splits.train_images[chosen], splits.train_labels[chosen], info, batch)
    statistics = None
    if options.batchnorm == "recompute":
        chosen = _subset(options.batchnorm_batches * config.data.batch_size, len(splits.train_images), BATCHNORM_SEED)
        statistics = pipeline.evaluation_dataset(splits.train_images[chosen], splits.train_labels[chosen], info,
                                                 config.data.batch_size).map(lambda images, labels: images)
    alphas = np.linspace(0.0, 1.0, options.interpolation_points)
    curve, errors, ends = [], {split: [] for split in sets}, {}
    for i, alpha in enumerate(alphas):
        line.set(float(alpha), w1, w2)
        if statistics is not None:
            line.recompute_batchnorm(statistics)
        for split, dataset in sets.items():
            loss, error, predicted = line.evaluate(dataset)
            curve.append({"alpha": float(alpha), "split": split, "error": error, "loss": loss})
            errors[split].append(error)
            if split == "test" and i in (0, len(alphas) - 1):
                ends[i] = predicted
    summary = {"disagreement": float(np.mean(ends[0] != ends[len(alphas) - 1]))}
    for split in ("test", "train"):
        values = np.asarray(errors.get(split, []))
        found = len(values) > 0
        summary[f"instability_{split}"] = barrier(values) if found else None
        summary[f"endpoint_{split}_error"] = float((values[0] + values[-1]) / 2) if found else None
        summary[f"max_{split}_error"] = float(np.max(values)) if found else None
    summary.update(distances(interpolation.prunable_positions(model), masks, w1, w2, dense_final))
    return curve, summary


def distances(positions, masks, w1, w2, dense_final) -> Dict[str, float]:
    """l2_distance ‖W1−W2‖ / mean ‖Wi‖ and pruning_distance ‖W1 − m⊙W_dense‖ / ‖m⊙W_dense‖,
    over the prunable weights."""
    def flat(values, masked=False):
        return np.concatenate([(np.asarray(values[i], np.float64) * (masks[path] if masked else 1)).ravel()
                               for path, i in positions])

    a, b, dense = flat(w1), flat(w2), flat(dense_final, masked=True)
    mean_norm = (np.linalg.norm(a) + np.linalg.norm(b)) / 2
    return {"l2_distance": float(np.linalg.norm(a - b) / mean_norm) if mean_norm else 0.0,
            "pruning_distance": float(np.linalg.norm(a - dense) / np.linalg.norm(dense)) if np.any(dense) else None}


def write_curve(path: str, curve: List[dict]):
    """interpolation_<part>.csv: alpha, split, error, loss."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=("alpha", "split", "error", "loss"))
            writer.writeheader()
            writer.writerows(curve)


def read_curve(path: str) -> List[dict]:
    with open(path, newline="") as f:
        return [{"alpha": float(r["alpha"]), "split": r["split"], "error": float(r["error"]), "loss": float(r["loss"])}
                for r in csv.DictReader(f)]


def barrier(errors: np.ndarray) -> float:
    """The error barrier along a line: the highest error minus the mean of the two ends'."""
    return float(np.max(errors) - (errors[0] + errors[-1]) / 2)
