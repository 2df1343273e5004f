"""prune_during_training: one run that prunes a little every epoch instead of whole retraining rounds.

From θk (θ0 by default) a dense run trains the parent's schedule and, every
--prune_every iterations (one epoch by default) up to --prune_until (half-way by
default), prunes a constant fraction of each weight's survivors, so that the last
pruning leaves exactly as many weights in every layer as the parent's mask at the
cell's level (the idea left open in the seeds; Zhou et al. 2019 for the criteria).
--criterion=magnitude drops the smallest |w|, movement those that moved least
since the run's start, |w - w_start|. What the pruned network becomes (--then, a
part each, sharing the one pruning run):

  keep    the pruning run itself, trained on to the end of the schedule;
  reset   its final mask, survivors reset to θ0 and trained for the whole schedule;
  rewind  the same from θk, the schedule from k (a ticket found in a single run).

The pruning hook keeps no state of its own across a kill: the masks are model
variables (checkpointed), the prunings done follow from the iteration and the
weights at the run's start are its initial weights file.
"""

import collections
import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from tf_lottery import branches
from tf_lottery.branches.base import MEASURED, Branch, Cell
from tf_lottery.config import ConfigError, option
from tf_lottery.errors import RunError, UsageError
from tf_lottery.experiment import files
from tf_lottery.pruning import constraint, gradual, prunable
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training.hooks import ActiveRun, Hook

THEN = ("keep", "reset", "rewind")
PRUNING_RUN = "pruning"  # the run's name is '<variant>_pruning'
FINAL_MASK = "final_mask.npz"  # in the pruning run's folder: the mask it ends with, which reset and rewind retrain


@dataclasses.dataclass(frozen=True)
class PruneDuringTrainingOptions:
    criterion: str = option("magnitude", "Which survivors each pruning drops: magnitude, the smallest |w|; movement, "
                            "those that moved least since the run's start, |w - w_start|.", choices=gradual.CRITERIA)
    prune_every: int = option(0, "Iterations between prunings (0: one epoch of the training split, "
                              "ceil(examples / --batch_size)).")
    prune_until: int = option(-1, "The iteration by which the target density is reached: the last pruning is the last "
                              "multiple of --prune_every after the run's start up to it (-1: half-way, k + (T - k) // 2).")
    rewind_point: int = option(-1, "k: the pruning run starts from the dense run's weights after k iterations and its "
                               "schedule from k (-1: the experiment's --rewind_iteration, 0 without one).")
    then: Tuple[str, ...] = option(("keep", "reset"), "What the pruned network becomes, a part each sharing the pruning "
                                   "run: keep (the pruning run, trained on to the end), reset (its final mask from θ0, "
                                   "the whole schedule), rewind (the same from θk, the schedule from k).")

    def validate(self):
        unknown = [t for t in self.then if t not in THEN]
        if unknown or not self.then:
            raise ConfigError(f"--then: expected some of {', '.join(THEN)}, got {','.join(self.then) or 'nothing'}")
        if len(set(self.then)) != len(self.then):
            raise ConfigError("--then: lists a value twice")
        if self.prune_every < 0:
            raise ConfigError(f"--prune_every: must be >= 0 (0: one epoch), got {self.prune_every}")
        if self.prune_until < -1:
            raise ConfigError(f"--prune_until: must be an iteration or -1 (half-way), got {self.prune_until}")
        if self.rewind_point < -1:
            raise ConfigError(f"--rewind_point: must be an iteration or -1 (the experiment's), got {self.rewind_point}")


def final_mask(path: str) -> masks_lib.Masks:
    """The pruning run's final mask, read when a retraining run first needs it (after the pruning run)."""
    recover = f"delete {os.path.dirname(path)} to run the pruning again"
    return masks_lib.MaskFile(path, recover, recover)


class GradualPruning(Hook):
    """Prunes the run's masks to the schedule's counts at its pruning iterations; writes the final mask."""

    def __init__(self, targets: masks_lib.Masks, criterion: str, interval: Optional[int], until: int, final_mask: str):
        self.targets, self.criterion, self.interval, self.until = targets, criterion, interval, until
        self.final_mask = final_mask
        self.iterations: List[int] = []
        self.start_values: Dict = {}

    def on_start(self, run: ActiveRun, resumed: bool):
        spec = run.spec
        if self.interval is None:  # another training split than the parent's: counted from the data
            self.interval = gradual.epoch_iterations(run.bench.splits(spec.config).info.train_size,
                                                     spec.config.data.batch_size)
        self.iterations = gradual.prune_iterations(spec.start_iteration, self.interval, self.until)
        if not self.iterations:
            raise UsageError(f"--prune_every: {self.interval} iterations leave no pruning between iteration "
                             f"{spec.start_iteration} and --prune_until={self.until}")
        if self.criterion == "movement":  # the weights at the run's start, read again after a kill
            self.start_values = _prunable_values(run.model, files.read_weights(spec.init.file))
        done = sum(1 for t in self.iterations if t <= int(run.trainer.iteration.numpy()))
        expected = self.counts(done)
        if masks_lib.counts(masks_lib.get_masks(run.model)) != expected:
            raise RunError(f"{spec.directory}: its checkpoint's masks are not those of pruning {done} of its "
                           f"schedule; delete {spec.directory} to run it again")

    def counts(self, pruning: int) -> Dict[str, int]:
        sizes = {name: m.size for name, m in self.targets.items()}
        return gradual.counts_after(sizes, masks_lib.counts(self.targets), pruning, len(self.iterations))

    def next_stop(self, iteration: int) -> Optional[int]:
        return next((t for t in self.iterations if t > iteration), None)

    def at_stop(self, run: ActiveRun, iteration: int):
        if iteration not in self.iterations:
            return
        current = masks_lib.get_masks(run.model)
        ranked = gradual.scores(self.criterion, masks_lib.prunable_values(run.model), self.start_values)
        pruned = gradual.prune_to_counts(ranked, current, self.counts(self.iterations.index(iteration) + 1))
        masks_lib.apply_masks(run.model, pruned)
        run.log.log(iteration, "mask", {"density": masks_lib.density(pruned),
                                        **{f"density/{n}": d for n, d in masks_lib.weight_densities(pruned).items()}})

    def on_end(self, run: ActiveRun, result: Dict):
        masks_lib.save(run.writable(self.final_mask), masks_lib.get_masks(run.model))
        result.update(prune_interval=self.interval, prune_iterations=self.iterations,
                      target_density=masks_lib.density(self.targets))


def _prunable_values(model, values) -> Dict:
    """{prunable weight path: its value in `values`} (values by position, as weights files hold them)."""
    position = {id(v): i for i, v in enumerate(constraint.model_weights(model))}
    return {w.path: values[position[id(w.variable)]] for w in prunable.prunable_weights(model)}


COLUMNS = ("run", "then") + MEASURED + (
    "target_density", "iterations_spent", "imp_final_test_accuracy", "imp_iterations_spent", "start_iteration",
    "prune_interval", "prunings", "last_prune_iteration")


@branches.register
class PruneDuringTraining(Branch):
    name = "prune_during_training"
    description = "one run that prunes a little every epoch to the level's per-layer densities; kept, reset or rewound"
    Options = PruneDuringTrainingOptions
    columns = COLUMNS
    pruned_levels_only = True
    part_options = ("then",)

    def __init__(self, parent, options=None, overrides=None):
        super().__init__(parent, options, overrides)
        k, until, end = self.rewind_point(), self.prune_until(), self.config.training.iterations
        if k >= end:
            raise UsageError(f"--rewind_point: {k} is not before the end of training ({end} iterations)")
        if not k < until <= end:
            raise UsageError(f"--prune_until: {until} is not after the run's start ({k}) and at most --iterations={end}")
        if "rewind" in self.options.then and k == 0:
            raise UsageError("--then=rewind: the pruning run starts from θ0, so rewind is reset; "
                             "set --rewind_point (or the experiment's --rewind_iteration)")
        interval = self.prune_interval()
        if interval is not None and not gradual.prune_iterations(k, interval, until):
            raise UsageError(f"--prune_every: {interval} iterations{' (one epoch)' if not self.options.prune_every else ''} "
                             f"leave no pruning between iteration {k} and --prune_until={until}; lower it")

    # The schedule --------------------------------------------------------------

    def rewind_point(self) -> int:
        k = self.options.rewind_point
        return self.parent.config.pruning.rewind_iteration if k == -1 else k

    def prune_until(self) -> int:
        k, end = self.rewind_point(), self.config.training.iterations
        return k + (end - k) // 2 if self.options.prune_until == -1 else self.options.prune_until

    def prune_interval(self) -> Optional[int]:
        """--prune_every, or one epoch of the parent's training split (None: another split, counted at the run's start)."""
        if self.options.prune_every:
            return self.options.prune_every
        same = (self.config.data.dataset, self.config.data.validation_size) == \
            (self.parent.config.data.dataset, self.parent.config.data.validation_size)
        if same and self.parent.dataset.train_size:
            return gradual.epoch_iterations(self.parent.dataset.train_size, self.config.data.batch_size)
        return None

    # Parts and runs ------------------------------------------------------------

    def parts(self, cell: Cell) -> List[Cell]:
        return [dataclasses.replace(cell, part=then) for then in self.options.then]

    def key(self, cell: Cell) -> str:
        return f"{cell.variant}_{cell.part}"

    def prepare(self, cell: Cell, bench):
        self.replay_dense(cell.replicate, [self.rewind_point()], bench)

    def pruning_spec(self, cell: Cell):
        k = self.rewind_point()
        masks = collections.OrderedDict((n, np.ones_like(m)) for n, m in self.targets(cell).items())  # dense
        spec = self.spec(cell, f"{cell.variant}_{PRUNING_RUN}", masks, self.dense_start(cell.replicate, k), k)
        return dataclasses.replace(spec, config=self.config)  # a whole schedule, whatever --retrain says

    def runs(self, cell: Cell):
        pruning = self.pruning_spec(cell)
        if cell.part == "keep":
            return [pruning]
        k = self.rewind_point() if cell.part == "rewind" else 0
        final = final_mask(os.path.join(pruning.directory, FINAL_MASK))
        retrain = self.spec(cell, f"{cell.variant}_{cell.part}", final, self.dense_start(cell.replicate, k), k)
        return [pruning, dataclasses.replace(retrain, config=self.config)]

    def targets(self, cell_or_spec) -> masks_lib.Masks:
        variant = cell_or_spec.variant if isinstance(cell_or_spec, Cell) else cell_or_spec.name[:-len(PRUNING_RUN) - 1]
        return self.parent.masks(cell_or_spec.replicate, cell_or_spec.level, variant)

    def hooks(self, spec):
        if not spec.name.endswith(f"_{PRUNING_RUN}"):
            return []
        return [GradualPruning(self.targets(spec), self.options.criterion, self.prune_interval(), self.prune_until(),
                               os.path.join(spec.directory, FINAL_MASK))]

    # Measuring -----------------------------------------------------------------

    def measure(self, cell: Cell, finished: Dict[str, dict], bench) -> List[dict]:
        pruning = finished[f"{cell.variant}_{PRUNING_RUN}"]
        name = f"{cell.variant}_{PRUNING_RUN}" if cell.part == "keep" else f"{cell.variant}_{cell.part}"
        result = finished[name]
        spent = pruning["iterations_trained"] + (0 if cell.part == "keep" else result["iterations_trained"])
        imp = self.parent.result(cell.replicate, cell.level, "imp") or {}
        return [{
            "run": name, "then": cell.part, "density": result["density"], **{k: result.get(k) for k in MEASURED},
            "target_density": pruning["target_density"], "iterations_spent": spent,
            "imp_final_test_accuracy": imp.get("final_test_accuracy"),
            "imp_iterations_spent": self.imp_iterations_spent(cell),
            "start_iteration": self.rewind_point() if cell.part != "reset" else 0,
            "prune_interval": pruning["prune_interval"], "prunings": len(pruning["prune_iterations"]),
            "last_prune_iteration": pruning["prune_iterations"][-1],
        }]

    def imp_iterations_spent(self, cell: Cell) -> Optional[int]:
        """What the parent's imp ticket at this level cost (results.add_costs), for the comparison."""
        if hasattr(self.parent, "iterations_spent"):
            return self.parent.iterations_spent(cell.replicate, cell.level, "imp")
        return next((r.get("iterations_spent") for r in self.parent.rows()
                     if (r["replicate"], r["level"], r["variant"]) == (cell.replicate, cell.level, "imp")), None)
