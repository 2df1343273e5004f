"""Mask criteria (Zhou et al. 2019, "Deconstructing Lottery Tickets"): which survivors a level keeps.

Each criterion scores every weight from w_i, the value the pruned level's weights
started from, and w_f, the value they ended with; the highest scores survive, up to
the level's exact count (strategies.ranked_masks), per layer or per group as
--pruning_scope says:

  large_final             |w_f|                     (the paper's magnitude pruning)
  small_final             -|w_f|
  large_init              |w_i|
  small_init              -|w_i|
  magnitude_increase      |w_f| - |w_i|
  movement                |w_f - w_i|
  large_init_large_final  kept where |w_i| and |w_f| are both above one shared percentile
                          of the survivors: the score is the lower of the two ranks
  random                  a seeded random score

`<criterion>_same_sign` also drops the survivors whose sign flipped between w_i and
w_f: they rank below every weight that kept its sign, so they survive only where
the level's count cannot be met without them (the density stays the schedule's, to
the weight). Ties break by position.
"""

from typing import Mapping, Optional, Sequence

import numpy as np

from tf_lottery.config import MASK_CRITERIA as CRITERIA, MASK_CRITERIA_BASE as BASE
from tf_lottery.pruning import strategies
from tf_lottery.pruning.masks import Masks

SAME_SIGN = "_same_sign"


def base_of(criterion: str) -> str:
    return criterion[: -len(SAME_SIGN)] if criterion.endswith(SAME_SIGN) else criterion


def needs_initial(criterion: str) -> bool:
    """Whether the criterion reads w_i (every one but large_final, small_final and random)."""
    return criterion.endswith(SAME_SIGN) or base_of(criterion) not in ("large_final", "small_final", "random")


def _ranks(values: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Each survivor's rank among the survivors (0 = smallest), ties by position; -1 elsewhere."""
    ranks = np.full(values.size, -1.0)
    positions = np.flatnonzero(alive)
    order = positions[np.argsort(values[positions], kind="stable")]
    ranks[order] = np.arange(order.size)
    return ranks


def scores(criterion: str, initial: Optional[Mapping[str, np.ndarray]], final: Mapping[str, np.ndarray],
           current: Masks, group_list: Sequence[strategies.Group], seed: int = 0) -> dict:
    """Every weight's score under `criterion` (higher kept); `initial` may be None when not needed."""
    base = base_of(criterion)
    if base not in BASE or criterion not in CRITERIA:
        raise ValueError(f"unknown mask criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    w_f = {n: np.asarray(v, np.float64) for n, v in final.items()}
    w_i = {n: np.asarray(v, np.float64) for n, v in initial.items()} if initial is not None else None
    if base == "large_final":
        return {n: np.abs(w_f[n]) for n in current}
    if base == "small_final":
        return {n: -np.abs(w_f[n]) for n in current}
    if base == "random":
        rng = np.random.default_rng(seed)
        return {n: rng.random(current[n].shape) for n in current}
    if w_i is None:
        raise ValueError(f"mask criterion {criterion} needs the weights the level started from")
    if base == "large_init":
        return {n: np.abs(w_i[n]) for n in current}
    if base == "small_init":
        return {n: -np.abs(w_i[n]) for n in current}
    if base == "magnitude_increase":
        return {n: np.abs(w_f[n]) - np.abs(w_i[n]) for n in current}
    if base == "movement":
        return {n: np.abs(w_f[n] - w_i[n]) for n in current}
    # large_init_large_final: a weight is above percentile q in both rankings exactly when the
    # lower of its two ranks is, so keeping the top count by that lower rank keeps the weights
    # above the one shared percentile that gives the level's count.
    result = {}
    for names, _ in group_list:
        sizes = [current[n].size for n in names]
        alive = np.concatenate([current[n].reshape(-1) > 0 for n in names])
        by_init = _ranks(np.concatenate([np.abs(w_i[n]).reshape(-1) for n in names]), alive)
        by_final = _ranks(np.concatenate([np.abs(w_f[n]).reshape(-1) for n in names]), alive)
        lower = np.minimum(by_init, by_final)
        for name, piece in zip(names, np.split(lower, np.cumsum(sizes)[:-1])):
            result[name] = piece.reshape(current[name].shape)
    return result


def sign_flipped(initial: Mapping[str, np.ndarray], final: Mapping[str, np.ndarray]) -> dict:
    """Where a weight's sign differs between w_i and w_f (a weight at exactly 0 has flipped
    unless both are 0)."""
    return {n: np.sign(np.asarray(initial[n])) != np.sign(np.asarray(final[n])) for n in final}


def criterion_masks(criterion: str, initial: Optional[Mapping[str, np.ndarray]], final: Mapping[str, np.ndarray],
                    current: Masks, group_list: Sequence[strategies.Group], level: int, seed: int = 0) -> Masks:
    """Level `level`'s mask under `criterion`: the surviving weights of `current` with the
    highest scores, `_same_sign` variants ranking the sign-flipped survivors last."""
    last = sign_flipped(initial, final) if criterion.endswith(SAME_SIGN) else None
    return strategies.ranked_masks(scores(criterion, initial, final, current, group_list, seed), current,
                                   group_list, level, last=last)
