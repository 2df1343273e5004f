"""Hooks: what a run does while it trains besides training, without copying the loop.

The loop in training/run.py calls every hook of a run:
  on_start(run, resumed)        before the first step (also after a resumption)
  next_stop(iteration)          an iteration the loop must pause at, or None
  at_stop(run, iteration)       at every pause: every `every` iterations, at next_stop's
                                iterations, evaluations, checkpoints and the end; it may
                                call run.request_stop() to end the run there
  on_evaluation(run, i, values) after each evaluation; values has 'test' only where test was read
  on_checkpoint(run, i)         after each checkpoint is written
  on_end(run, result)           before result.json is written; may add fields to result

A hook that keeps state across a kill must keep it in the model (masks are model
variables, so a hook that changes masks is resumed with them) or recompute it in
on_start. result.json's densities are those of the model's masks at the end;
mask.npz keeps the masks the run started with. Decisions that every worker of a multi-worker job must take alike
(whether a file exists) belong in on_start, before the run writes anything.
"""

import math
import os
from typing import Dict, Optional

from tf_lottery.training import checkpoints


class ActiveRun:
    """The run a hook is called for: its spec, model, trainer, metrics log and masks."""

    def __init__(self, spec, bench, trainer, log, masks, best_validation_loss: float = math.inf):
        self.spec, self.bench, self.trainer, self.log, self.masks = spec, bench, trainer, log, masks
        self.best_validation_loss = best_validation_loss  # so far (the log's, on resumption)
        self.stop_requested = False

    def request_stop(self):
        """Ends the run at the current stop (from at_stop): it is evaluated there and finished as at its
        last iteration, so result.json's final numbers are those of that iteration."""
        self.stop_requested = True

    @property
    def model(self):
        return self.trainer.model

    def writable(self, path: str) -> str:
        """Where this process writes `path` (the path itself on the chief; scratch on other workers)."""
        return self.bench.files.writable(path)

    def evaluate(self, iteration: int, hooks=(), final: bool = False) -> Dict[str, Dict[str, float]]:
        """Evaluates validation, and test where it is read (see --test_every), logs them and tells
        the hooks; returns {split: values}."""
        values = {}
        sets = self.bench.evaluation_sets(self.spec.config)
        if "validation" in sets:
            values["validation"] = self.trainer.evaluate(sets["validation"])
            self.log.log(iteration, "validation", values["validation"])
        if self._reads_test(iteration, values, final):
            values["test"] = self.trainer.evaluate(sets["test"])
            self.log.log(iteration, "test", values["test"])
        for hook in hooks:
            hook.on_evaluation(self, iteration, values)
        return values

    def _reads_test(self, iteration: int, values, final: bool) -> bool:
        """Test at every `test_every`, at the end, and wherever validation loss reaches a new
        minimum (the first, on ties), which is where the early-stopping iteration can be."""
        every = self.spec.config.training.test_every
        reads = final or not every or iteration % every == 0 or "validation" not in values
        loss = values.get("validation", {}).get("loss", math.nan)
        if math.isfinite(loss) and loss < self.best_validation_loss:
            self.best_validation_loss = loss
            reads = True
        return reads


class Hook:
    """Does nothing; override what a hook needs. `every`: call at_stop at its multiples too."""

    every: int = 0

    def on_start(self, run: ActiveRun, resumed: bool):
        pass

    def next_stop(self, iteration: int) -> Optional[int]:
        if self.every:
            return (iteration // self.every + 1) * self.every
        return None

    def at_stop(self, run: ActiveRun, iteration: int):
        pass

    def on_evaluation(self, run: ActiveRun, iteration: int, values: Dict[str, Dict[str, float]]):
        pass

    def on_checkpoint(self, run: ActiveRun, iteration: int):
        pass

    def on_end(self, run: ActiveRun, result: Dict):
        pass


class SaveWeightsAt(Hook):
    """Writes the model's weights to `path` at `iteration`, once (θk of the dense run)."""

    def __init__(self, iteration: int, path: str):
        self.iteration, self.path = iteration, path
        self.missing = False

    def on_start(self, run: ActiveRun, resumed: bool):
        self.missing = not os.path.exists(self.path)

    def next_stop(self, iteration: int) -> Optional[int]:
        return self.iteration if iteration < self.iteration else None

    def at_stop(self, run: ActiveRun, iteration: int):
        if iteration == self.iteration and self.missing:
            checkpoints.save_weights(run.model, run.writable(self.path))
