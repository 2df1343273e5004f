"""Structured masks: whole units and their downstream rows, N of every M, scores, refused graphs."""

import numpy as np
import pytest
import tf_keras as keras

from tf_lottery import models
from tf_lottery.config import ConfigError, ExperimentConfig
from tf_lottery.errors import UsageError
from tf_lottery.lottery import early_bird
from tf_lottery.pruning import masks as masks_lib, strategies, structure


def _model(name, shape=(32, 32, 3), **options):
    return models.build(name, shape, 10, seed=0, **options)


def test_mlp_groups_read_through_to_the_next_dense_layer_and_the_output_is_no_group():
    groups = structure.unit_groups(_model("mlp", (28, 28, 1), hidden_units=(16, 8)))
    assert [(g.layer, g.units, g.bias, g.kind) for g in groups] == [("fc1", 16, "fc1/bias", "dense"),
                                                                     ("fc2", 8, "fc2/bias", "dense")]
    assert groups[0].consumers == (structure.Consumer("fc2/kernel", 0, 1),)
    assert groups[1].consumers == (structure.Consumer("output/kernel", 0, 1),)


def test_a_channel_mask_removes_whole_filters_and_their_rows_through_flatten():
    model = _model("conv2")
    groups = structure.unit_groups(model)
    conv2 = next(g for g in groups if g.layer == "conv2")
    assert conv2.consumers == (structure.Consumer("fc1/kernel", 0, 16 * 16),)  # 32x32 pooled to 16x16
    kept = {g.layer: np.ones(g.units, bool) for g in groups}
    kept["conv2"][[3, 10]] = False
    result = structure.weight_masks(groups, kept, masks_lib.ones_like_model(model))
    assert not result["conv2/kernel"][..., [3, 10]].any() and result["conv2/kernel"].sum() == 3 * 3 * 64 * 62
    rows = np.arange(result["fc1/kernel"].shape[0]) % 64
    dropped = np.isin(rows, [3, 10])
    assert not result["fc1/kernel"][dropped].any() and result["fc1/kernel"][~dropped].all()
    assert result["conv1/kernel"].all() and result["output/kernel"].all()
    assert [np.flatnonzero(~k).tolist() for k in structure.kept_units(groups, result).values()][1] == [3, 10]


def test_neuron_levels_keep_the_planned_units_with_largest_l1_norm_and_never_revive():
    model = _model("mlp", (28, 28, 1), hidden_units=(10, 6))
    groups = structure.unit_groups(model)
    rates = {"fc1/kernel": 0.5, "fc2/kernel": 0.5, "output/kernel": 0.25}
    values = {p: np.ones(m.shape) for p, m in masks_lib.ones_like_model(model).items()}
    values["fc1/kernel"] = values["fc1/kernel"] * np.arange(1, 11)  # unit j's L1 grows with j
    level1 = structure.structured_masks(groups, values, masks_lib.ones_like_model(model), rates, "layerwise", 1)
    kept = structure.kept_units(groups, level1)
    assert np.flatnonzero(kept["fc1"]).tolist() == [5, 6, 7, 8, 9] and kept["fc2"].sum() == 3
    assert not level1["fc2/kernel"][:5].any()  # the rows of removed fc1 units
    values["fc1/kernel"] = values["fc1/kernel"][:, ::-1].copy()  # removed units now score highest
    level2 = structure.structured_masks(groups, values, level1, rates, "layerwise", 2)
    kept2 = structure.kept_units(groups, level2)
    assert kept2["fc1"].sum() == 3 and not (kept2["fc1"] & ~kept["fc1"]).any()
    assert kept2["fc2"].sum() == 2  # round(6 * 0.25) = 2 (1.5 rounds half up)


def test_global_scope_ranks_units_of_layers_sharing_a_rate_and_keeps_one_per_layer():
    groups = [structure.UnitGroup("a", "a/kernel", 4, None, None, ()), structure.UnitGroup("b", "b/kernel", 4, None, None, ())]
    scores = {"a": np.array([1.0, 2, 3, 4]), "b": np.array([0.1, 0.2, 0.3, 0.4])}
    alive = {"a": np.ones(4, bool), "b": np.ones(4, bool)}
    kept = structure.select_units(groups, scores, alive, {"a/kernel": 0.5, "b/kernel": 0.5}, "global", 1)
    assert kept["a"].tolist() == [False, True, True, True] and kept["b"].tolist() == [False, False, False, True]


def test_the_batchnorm_score_is_the_absolute_gamma():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c1", kernel_constraint=structure_constraint())(inputs)
    x = keras.layers.BatchNormalization(name="c1_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, name="out", kernel_constraint=structure_constraint())(x)
    model = keras.Model(inputs, outputs)
    from tf_lottery.pruning import prunable  # pylint: disable=import-outside-toplevel

    prunable.attach_masks(model)
    prunable.declare_outputs(model, ["out"])
    [group] = structure.unit_groups(model)
    assert group.batchnorm == "c1_bn" and group.consumers == (structure.Consumer("out/kernel", 0, 1),)
    model.get_layer("c1_bn").gamma.assign([0.5, -3.0, 0.1, 2.0])
    scores = structure.unit_scores([group], {}, {}, "batchnorm", strategies.batchnorm_gammas(model))
    np.testing.assert_allclose(scores["c1"], [0.5, 3.0, 0.1, 2.0])
    kept = structure.select_units([group], scores, {"c1": np.ones(4, bool)}, {"c1/kernel": 0.5}, "layerwise", 1)
    assert kept["c1"].tolist() == [False, True, False, True]


def structure_constraint():
    from tf_lottery.pruning.constraint import MaskConstraint  # pylint: disable=import-outside-toplevel

    return MaskConstraint()


def test_batchnorm_score_is_refused_where_a_layer_has_no_batchnorm():
    groups = structure.unit_groups(_model("conv2"), kinds=("conv",))
    with pytest.raises(UsageError, match="conv1 has no BatchNorm"):
        structure.unit_scores(groups, {}, {}, "batchnorm", {})


def test_n_of_m_keeps_exactly_n_of_every_m_with_the_largest_magnitudes():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(12, 5))
    mask = structure.n_of_m_mask(values, np.ones((12, 5)), 2, 4)
    blocks = mask.reshape(3, 4, 5)
    assert (blocks.sum(axis=1) == 2).all()
    for b in range(3):
        for u in range(5):
            top = np.argsort(-np.abs(values[4 * b:4 * b + 4, u]), kind="stable")[:2]
            assert sorted(np.flatnonzero(blocks[b, :, u]).tolist()) == sorted(top.tolist())
    conv = structure.n_of_m_mask(rng.normal(size=(3, 3, 8, 4)), np.ones((3, 3, 8, 4)), 1, 4)
    assert (conv.reshape(3, 3, 2, 4, 4).sum(axis=3) == 1).all()  # along the input channels
    short = structure.n_of_m_mask(values[:6], np.ones((6, 5)), 3, 4)  # 4 + a trailing block of 2
    assert (short[:4].sum(axis=0) == 3).all() and (short[4:].sum(axis=0) == 2).all()


def test_n_of_m_levels_approach_n_and_random_keeps_the_block_counts():
    assert [structure.keep_of_m(2, 4, 0.5, level) for level in range(4)] == [4, 2, 2, 2]
    assert [structure.keep_of_m(2, 4, 0.2, level) for level in range(4)] == [4, 3, 3, 2]
    rng = np.random.default_rng(1)
    like = {"w": structure.n_of_m_mask(rng.normal(size=(8, 6)), np.ones((8, 6)), 2, 4), "b": np.ones(3, np.float32)}
    random = structure.random_n_of_m(like, 4, seed=3)
    assert (random["w"].reshape(2, 4, 6).sum(axis=1) == 2).all() and not np.array_equal(random["w"], like["w"])
    assert random["b"].all()


def test_channel_early_bird_distance_counts_differing_channels_of_the_survivors():
    groups = [structure.UnitGroup("c", "c/kernel", 4, None, None, (structure.Consumer("d/kernel", 0, 1),), "conv")]
    def mask(kept, base=None):
        return structure.weight_masks(groups, {"c": np.array(kept)}, base or {"c/kernel": np.ones((3, 3, 2, 4)),
                                                                               "d/kernel": np.ones((4, 5))})
    run = mask([True, True, True, False])  # the level's mask: 3 channels survive
    a, b = mask([True, True, False, False]), mask([True, False, True, False])
    assert early_bird.unit_mask_distance({"c": np.array([1, 0, 1], bool)}, {"c": np.array([1, 1, 0], bool)}) == 2 / 3
    assert early_bird.unit_distance(groups)(a, b, run) == pytest.approx(2 / 3)  # 2 differing of 3 survivors
    assert early_bird.unit_distance(groups)(a, a, run) == 0.0


def test_resnet_channels_are_refused_in_one_line():
    with pytest.raises(UsageError) as error:
        structure.structure_groups(_model("resnet20"), "channels")
    assert "\n" not in str(error.value) and "Add" in str(error.value)


def test_vgg_groups_have_their_batchnorm_and_global_pooling_consumers():
    groups = structure.unit_groups(_model("vgg19"))
    assert all(g.batchnorm == f"{g.layer}_bn" and g.bias is None for g in groups)
    assert groups[-1].consumers == (structure.Consumer("output/kernel", 0, 1),)


def test_groups_round_trip_through_json():
    groups = structure.unit_groups(_model("conv2"))
    assert structure.groups_from_json(structure.groups_to_json(groups)) == groups


@pytest.mark.parametrize("values, flag", [
    (dict(pruning_structure="neurons", mask_criterion="movement"), "mask_criterion"),
    (dict(pruning_structure="neurons", early_bird=True), "early_bird"),
    (dict(channel_score="batchnorm"), "channel_score"),
    (dict(n_of_m=(2, 4, 8), pruning_structure="n_of_m"), "n_of_m"),
    (dict(n_of_m=(1, 8)), "n_of_m"),
    (dict(pruning_structure="n_of_m", pruning_scope="global"), "pruning_scope"),
    (dict(bn_l1=-1.0), "bn_l1"),
])
def test_bad_structure_settings_are_one_line_errors(values, flag):
    with pytest.raises(ConfigError, match=f"^--{flag}: "):
        ExperimentConfig.from_flat(values)


def test_default_structure_keeps_the_experiment_hash():
    assert ExperimentConfig().hashed_values() == {}
    assert ExperimentConfig.from_flat({"pruning_structure": "neurons"}).hashed_values() == {"pruning_structure": "neurons"}
