"""Mask criteria on hand-made weights; the IMP loop prunes by the chosen one."""

import os

import numpy as np
import pytest

from tf_lottery import config as config_lib
from tf_lottery.config import ConfigError, ExperimentConfig
from tf_lottery.experiment import files
from tf_lottery.experiment.reader import Experiment
from tf_lottery.pruning import criteria

# One layer of 8 weights; every level keeps 4 of them (rate 0.5, level 1).
W_I = np.array([0.9, -0.1, 0.5, -0.7, 0.2, 0.05, -0.3, 0.6])
W_F = np.array([0.1, -0.8, -0.6, -0.9, 0.25, 0.7, 0.45, 0.02])
GROUPS = [(("w",), 0.5)]
ONES = {"w": np.ones(8, np.float32)}


def _kept(criterion, current=ONES, initial=W_I, final=W_F, seed=0):
    mask = criteria.criterion_masks(criterion, {"w": initial}, {"w": final}, current, GROUPS, 1, seed=seed)["w"]
    return set(np.flatnonzero(mask).tolist())


@pytest.mark.parametrize("criterion, expected", [
    ("large_final", {1, 2, 3, 5}),         # |w_f| = .8 .6 .9 .7
    ("small_final", {0, 4, 6, 7}),         # |w_f| = .1 .25 .45 .02
    ("large_init", {0, 2, 3, 7}),          # |w_i| = .9 .5 .7 .6
    ("small_init", {1, 4, 5, 6}),          # |w_i| = .1 .2 .05 .3
    ("magnitude_increase", {1, 3, 5, 6}),  # |w_f|-|w_i| = .7 .2 .65 .15 (then .1 at 2)
    ("movement", {0, 1, 2, 6}),            # |w_f-w_i| = .8 .7 1.1 .75 (then .65 at 5)
])
def test_each_criterion_keeps_the_highest_scores(criterion, expected):
    assert _kept(criterion) == expected


def test_movement_and_magnitude_increase_scores():
    scores = criteria.scores("movement", {"w": W_I}, {"w": W_F}, ONES, GROUPS)
    np.testing.assert_allclose(scores["w"], np.abs(W_F - W_I))
    scores = criteria.scores("magnitude_increase", {"w": W_I}, {"w": W_F}, ONES, GROUPS)
    np.testing.assert_allclose(scores["w"], np.abs(W_F) - np.abs(W_I))


def test_large_init_large_final_keeps_weights_above_one_shared_percentile():
    # Ranks (0 = smallest) of |w_i|: 7 1 4 6 2 0 3 5; of |w_f|: 1 6 4 7 2 5 3 0; lower: 1 1 4 6 2 0 3 0.
    # The four with the highest lower rank (3, 2, 6, 4) are those ranked at least 2 in both
    # rankings: the one shared percentile that leaves four.
    kept = _kept("large_init_large_final")
    assert kept == {2, 3, 4, 6}
    i_rank, f_rank = np.argsort(np.argsort(np.abs(W_I))), np.argsort(np.argsort(np.abs(W_F)))
    threshold = min(min(i_rank[k], f_rank[k]) for k in kept)
    assert all(min(i_rank[k], f_rank[k]) < threshold for k in set(range(8)) - kept)


def test_same_sign_drops_exactly_the_sign_flipped_weights():
    flipped = set(np.flatnonzero(np.sign(W_I) != np.sign(W_F)).tolist())
    assert flipped == {2, 6}
    # large_final keeps 1 2 3 5; the same-sign variant drops 2 and takes the next same-sign weight.
    assert _kept("large_final_same_sign") == {1, 3, 5, 4}
    for base in ("large_final", "magnitude_increase", "movement", "large_init"):
        kept = _kept(base + "_same_sign")
        assert not kept & flipped
        # and otherwise follows the base criterion among the weights that kept their sign
        scores = criteria.scores(base, {"w": W_I}, {"w": W_F}, ONES, GROUPS)["w"]
        same = sorted(set(range(8)) - flipped, key=lambda k: -scores[k])
        assert kept == set(same[:4])


def test_same_sign_keeps_flipped_weights_only_when_the_count_needs_them():
    w_f = -W_I  # every sign flipped: the count is met from the flipped weights by |w_f|
    assert _kept("large_final_same_sign", final=w_f) == _kept("large_final", final=w_f)


def test_survivors_only_and_ties_by_position():
    current = {"w": np.array([0, 1, 1, 1, 1, 1, 1, 0], np.float32)}
    # Level 1 at rate 0.5 keeps 4 of the 8: only survivors, the largest |w_f| among them.
    assert _kept("large_final", current=current) == {1, 2, 3, 5}
    assert _kept("small_final", current=current) == {2, 4, 5, 6}
    ties = np.ones(8)
    assert _kept("large_final", final=ties) == {0, 1, 2, 3}


def test_random_is_seeded_and_global_scope_ranks_across_layers():
    assert _kept("random", seed=3) == _kept("random", seed=3)
    assert len({frozenset(_kept("random", seed=s)) for s in range(6)}) > 1
    initial = {"a": W_I, "b": W_I * 10}
    final = {"a": W_F, "b": W_F * 10}
    current = {"a": np.ones(8, np.float32), "b": np.ones(8, np.float32)}
    masks = criteria.criterion_masks("movement", initial, final, current, [(("a", "b"), 0.5)], 1)
    assert masks["a"].sum() + masks["b"].sum() == 8
    # b's movements are ten times a's: all but b's smallest (0.5) outrank a's largest (1.1)
    assert np.flatnonzero(masks["a"]).tolist() == [2] and np.flatnonzero(masks["b"] == 0).tolist() == [4]


def test_config_lists_the_criteria_and_rejects_others():
    assert "large_final_same_sign" in config_lib.MASK_CRITERIA and "random_same_sign" not in config_lib.MASK_CRITERIA
    assert ExperimentConfig().replace(mask_criterion="movement").experiment_hash() != ExperimentConfig().experiment_hash()
    with pytest.raises(ConfigError, match="--mask_criterion: unknown criterion 'largest'"):
        ExperimentConfig().replace(mask_criterion="largest")
    with pytest.raises(ConfigError, match="--early_bird: .*--mask_criterion=large_final"):
        ExperimentConfig().replace(mask_criterion="movement", early_bird=True)


def test_imp_prunes_by_the_criterion_from_the_level_start_and_final_weights(make_config):
    from tf_lottery.lottery import imp  # pylint: disable=import-outside-toplevel

    config = make_config(levels=2, mask_criterion="magnitude_increase_same_sign", rewind_iteration=20,
                         iterations=40, experiment_name="criterion")
    rows = imp.run_experiment(config)
    assert {r["mask_criterion"] for r in rows} == {"magnitude_increase_same_sign"}
    parent = Experiment.open(os.path.join(config.run.output_dir, "criterion"))
    names = files.read_weight_names(parent.paths.theta_init(0))
    prunable = {name: i for i, name in enumerate(names) if name.endswith("kernel:0")}
    for level in (1, 2):
        # w_i: θk for the mask made from level 0 (where every later level starts), θk for level 1's too.
        w_i = parent.theta_rewind(0)
        w_f = parent.final_weights(0, level - 1, "imp")
        previous = parent.masks(0, level - 1, "imp")
        mask = parent.masks(0, level, "imp")
        for path, current in previous.items():
            index = prunable[path.replace("/kernel", "/kernel:0")]
            score = np.abs(w_f[index]) - np.abs(w_i[index])
            flipped = np.sign(w_f[index]) != np.sign(w_i[index])
            kept = mask[path] > 0
            assert np.all(current[kept] > 0)
            alive_same = (current > 0) & ~flipped
            if kept.sum() <= alive_same.sum():  # enough same-sign survivors: no flipped weight kept
                assert not np.any(kept & flipped)
                assert score[kept].min() >= score[alive_same & ~kept].max(initial=-np.inf)
