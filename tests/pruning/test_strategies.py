"""Density schedules are exact to the weight; global pruning ranks across layers."""

import numpy as np
import pytest

from tf_lottery import models
from tf_lottery.config import ConfigError, ExperimentConfig
from tf_lottery.pruning import masks, strategies


def _model():
    return models.build("lenet300_100", (28, 28, 1), 10, seed=0)


def _scores(model, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=k.shape) for name, k in masks.prunable_values(model).items()}


def test_default_rates_prune_output_at_half_rate_and_ignore_layers():
    model = _model()
    pruning = ExperimentConfig().replace(prune_rate=0.2).pruning
    assert strategies.weight_rates(model, pruning) == {"fc1/kernel": 0.2, "fc2/kernel": 0.2, "output/kernel": 0.1}
    pruning = ExperimentConfig().replace(prune_rate=0.2, output_prune_rate=0.0, prune_layers_ignore=("fc2",)).pruning
    assert strategies.weight_rates(model, pruning) == {"fc1/kernel": 0.2, "fc2/kernel": 0.0, "output/kernel": 0.0}
    with pytest.raises(ConfigError, match="no prunable layer or weight named fc9"):
        strategies.weight_rates(model, ExperimentConfig().replace(prune_layers_ignore=("fc9",)).pruning)


def test_layerwise_iterative_density_is_exact_at_every_level():
    model = _model()
    rates = {"fc1/kernel": 0.2, "fc2/kernel": 0.2, "output/kernel": 0.1}
    groups = strategies.groups(rates, "layerwise")
    current = masks.ones_like_model(model)
    for level in range(1, 16):
        scores = _scores(model, seed=level)  # new "trained weights" every level
        new = strategies.magnitude_masks(scores, current, groups, level)
        for name, mask in new.items():
            size = mask.size
            assert np.count_nonzero(mask) == int(np.floor(size * (1 - rates[name]) ** level + 0.5))
            assert np.all(current[name][mask == 1] == 1), "a pruned weight came back"
        current = new
    assert masks.weight_densities(current)["fc1/kernel"] == pytest.approx(0.8 ** 15, abs=1 / 235200)


def test_oneshot_reaches_the_iterative_density_from_dense_weights():
    model = _model()
    rates = {"fc1/kernel": 0.2, "fc2/kernel": 0.2, "output/kernel": 0.1}
    scores = _scores(model)
    oneshot = strategies.magnitude_masks(scores, masks.ones_like_model(model), strategies.groups(rates, "layerwise"), 7)
    for name, mask in oneshot.items():
        keep = int(np.count_nonzero(mask))
        assert keep == strategies.keep_count(mask.size, rates[name], 7)
        # The survivors are exactly the largest magnitudes.
        threshold = np.sort(np.abs(scores[name]).ravel())[::-1][keep - 1]
        assert np.all(np.abs(scores[name])[mask == 1] >= threshold)
        assert np.all(np.abs(scores[name])[mask == 0] <= threshold)


def test_global_pruning_ranks_across_layers_and_keeps_group_totals():
    model = _model()
    scores = _scores(model)
    scores["fc2/kernel"] = scores["fc2/kernel"] * 1e-3  # fc2 holds the smallest magnitudes
    rates = {"fc1/kernel": 0.2, "fc2/kernel": 0.2, "output/kernel": 0.0}
    groups = strategies.groups(rates, "global")
    assert groups == [(("fc1/kernel", "fc2/kernel"), 0.2), (("output/kernel",), 0.0)]
    new = strategies.magnitude_masks(scores, masks.ones_like_model(model), groups, 1)
    fc1, fc2 = new["fc1/kernel"], new["fc2/kernel"]
    assert np.count_nonzero(fc1) + np.count_nonzero(fc2) == strategies.keep_count(fc1.size + fc2.size, 0.2, 1)
    assert np.count_nonzero(new["fc2/kernel"]) == 0, "the 30,000 smallest weights are all in fc2 and go first"
    assert np.all(new["output/kernel"] == 1), "a 0% group stays dense"


def test_random_masks_keep_per_layer_counts_but_move_positions():
    model = _model()
    ticket = strategies.magnitude_masks(_scores(model), masks.ones_like_model(model),
                                        strategies.groups(dict.fromkeys(masks.get_masks(model), .5), "layerwise"), 2)
    random = strategies.random_masks(ticket, seed=3)
    assert masks.counts(random) == masks.counts(ticket)
    assert not np.array_equal(random["fc1/kernel"], ticket["fc1/kernel"])
    np.testing.assert_array_equal(strategies.random_masks(ticket, seed=3)["fc1/kernel"], random["fc1/kernel"])


def test_expected_counts_match_the_plan_for_both_scopes():
    sizes, rates = {"a": 1000, "b": 10}, {"a": 0.2, "b": 0.2}
    assert strategies.expected_counts(sizes, rates, "layerwise", 3) == {"a": 512, "b": 5}
    assert strategies.expected_counts(sizes, rates, "global", 3) == {"a+b": 517}
