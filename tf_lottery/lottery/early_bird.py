"""Early-Bird tickets in the IMP loop (You et al., ICLR 2020), on weights or on channels.

While a level trains, every `--early_bird_every` iterations the hook draws the mask
the next level would take from the current weights (the IMP loop's own magnitude
rule), and the normalised Hamming distance to the mask drawn before it: the
fraction of prunable weights whose bit differs. When the last `--early_bird_window`
distances are all below `--early_bird_threshold`, the mask has stopped changing:
the level ends there, and the next level is pruned from its weights at that
iteration, as from any level's final weights. The paper draws masks on BatchNorm
channels (network slimming) from the dense network; this draws them on weights, the
unit IMP prunes, and normalises the distance by the weights the level's mask leaves
(those the draw ranks): at level 0 that is every weight, as in the paper, and at a
sparse level a count over all weights would call any two masks close. With
--pruning_structure=channels the draws are channel masks, the paper's own form: the
distance is the fraction of the level's surviving channels (structure.kept_units)
kept by one draw and not the other; --channel_score=batchnorm with --bn_l1 is the
paper's network-slimming setting.

The distances go to metrics.csv (split 'early_bird', metric 'mask_distance'), the
iteration where the ticket was drawn to result.json ('early_bird_iteration'; none
when the masks never settled and the level trained to its end). A kill is harmless:
the distances are read back from metrics.csv and the last drawn mask from
early_bird_mask_<iteration>.npz, written just before each checkpoint.
"""

import math
import os
from typing import Callable, List, Mapping, Optional

import numpy as np

from tf_lottery.experiment import files
from tf_lottery.pruning import masks as masks_lib, structure
from tf_lottery.training.hooks import ActiveRun, Hook

SPLIT, METRIC = "early_bird", "mask_distance"
STATE_PREFIX = "early_bird_mask_"  # early_bird_mask_<checkpoint iteration>.npz: the last mask drawn by then


def mask_distance(a: masks_lib.Masks, b: masks_lib.Masks, candidates: Optional[masks_lib.Masks] = None) -> float:
    """Normalised Hamming distance: the fraction of the candidate weights (those the masks were
    drawn among; default all) whose mask bit differs."""
    differing = sum(int(np.count_nonzero((a[name] > 0) != (b[name] > 0))) for name in a)
    count = (sum(int(np.count_nonzero(m)) for m in candidates.values()) if candidates is not None
             else sum(m.size for m in a.values()))
    return differing / max(count, 1)


def unit_mask_distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray],
                       candidates: Optional[Mapping[str, np.ndarray]] = None) -> float:
    """Normalised Hamming distance between two channel masks ({layer: bool per unit}): the fraction
    of the candidate units (those still alive, default all) kept by one and not the other."""
    differing = sum(int(np.count_nonzero(np.asarray(a[name], bool) != np.asarray(b[name], bool))) for name in a)
    count = (sum(int(np.count_nonzero(c)) for c in candidates.values()) if candidates is not None
             else sum(np.asarray(m).size for m in a.values()))
    return differing / max(count, 1)


def unit_distance(groups) -> Callable:
    """mask_distance's counterpart for --pruning_structure=channels: the distance between the channel
    masks (structure.kept_units) of two weight masks, over the channels the level's mask leaves."""

    def distance(a: masks_lib.Masks, b: masks_lib.Masks, candidates: Optional[masks_lib.Masks] = None) -> float:
        alive = structure.kept_units(groups, candidates) if candidates is not None else None
        return unit_mask_distance(structure.kept_units(groups, a), structure.kept_units(groups, b), alive)

    return distance


def settled(distances: List[float], window: int, threshold: float) -> bool:
    """Whether the last `window` distances are all below `threshold`."""
    return len(distances) >= window and all(d < threshold for d in distances[-window:])


class EarlyBird(Hook):
    """Ends a level's run once the mask it would give the next level stops changing.

    Args:
      draw: the next level's mask from the model's current weights and masks.
      every, window, threshold: --early_bird_every, --early_bird_window, --early_bird_threshold.
      earliest: the run may not end before this iteration (θk of a dense run must be saved first).
      distance: (previous mask, mask, the run's mask) -> distance; mask_distance, or unit_distance's
        on channel masks.
    """

    def __init__(self, draw: Callable[[object], masks_lib.Masks], every: int, window: int, threshold: float,
                 earliest: int = 0, distance: Callable = mask_distance):
        self.draw, self.every, self.window, self.threshold, self.earliest = draw, every, window, threshold, earliest
        self.distance = distance
        self.previous: Optional[masks_lib.Masks] = None
        self.distances: List[float] = []
        self.drawn_at: Optional[int] = None

    def on_start(self, run: ActiveRun, resumed: bool):
        self.previous, self.distances, self.drawn_at = None, [], None
        if resumed:
            self.distances = [r["value"] for r in run.log.rows if r["split"] == SPLIT and r["metric"] == METRIC]
            state = _state_file(run, int(run.trainer.iteration.numpy()))
            if os.path.exists(state):
                self.previous = files.read_masks(state, recover="delete the run's folder to train it again")

    def at_stop(self, run: ActiveRun, iteration: int):
        if iteration % self.every == 0 and self.drawn_at is None:
            current = self.draw(run.model)
            if self.previous is not None:
                self.distances.append(self.distance(self.previous, current, run.masks))
                run.log.log(iteration, SPLIT, {METRIC: self.distances[-1]})
            self.previous = current
            if iteration >= self.earliest and settled(self.distances, self.window, self.threshold):
                self.drawn_at = iteration
                run.request_stop()
        if iteration % run.spec.config.training.checkpoint_every == 0 and self.previous is not None:
            # Before the checkpoint of this iteration is written, so whichever one a resumption finds has its mask.
            files.write_masks(run.writable(_state_file(run, iteration)), self.previous)

    def on_checkpoint(self, run: ActiveRun, iteration: int):
        _remove_states(run, keep=os.path.basename(_state_file(run, iteration)))

    def on_end(self, run: ActiveRun, result):
        _remove_states(run)
        result["early_bird_iteration"] = self.drawn_at
        result["early_bird_last_distance"] = self.distances[-1] if self.distances else math.nan


def epoch_iterations(train_examples: int, batch_size: int) -> int:
    """Iterations in one pass over the training split (the paper's unit for drawing masks)."""
    return max(1, math.ceil(train_examples / batch_size))


def _state_file(run: ActiveRun, iteration: int) -> str:
    return os.path.join(run.spec.directory, f"{STATE_PREFIX}{iteration}.npz")


def _remove_states(run: ActiveRun, keep: str = ""):
    if run.bench.is_chief:
        for name in os.listdir(run.spec.directory):
            if name.startswith(STATE_PREFIX) and name != keep:
                os.remove(os.path.join(run.spec.directory, name))
