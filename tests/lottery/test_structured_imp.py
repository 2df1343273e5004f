"""Structured IMP end to end: planned unit counts, weight densities, controls, units_kept, --bn_l1."""

import csv

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from conftest import small_config
from tf_lottery.experiment.paths import ExperimentPaths
from tf_lottery.lottery import imp, plan as plan_lib
from tf_lottery.pruning import masks as masks_lib, structure
from tf_lottery.training.loop import Trainer


@pytest.fixture(scope="module")
def neurons_experiment(tmp_path_factory):
    config = small_config(tmp_path_factory.mktemp("structured"), hidden_units=(16, 8), pruning_structure="neurons",
                          controls=("reinit", "random_prune"), iterations=40, eval_every=20)
    imp.run_experiment(config)
    return config, ExperimentPaths.of(config.run.output_dir, config.experiment_name)


def test_neuron_levels_keep_the_planned_units_and_results_count_weights(neurons_experiment):
    config, paths = neurons_experiment
    groups = structure.read_groups(paths.root)
    assert [(g.layer, g.units) for g in groups] == [("fc1", 16), ("fc2", 8)]
    with open(paths.results) as f:
        rows = {(int(r["level"]), r["variant"]): r for r in csv.DictReader(f)}
    planned = plan_lib.make_plan(config).structured_levels
    for level, expected in ((1, {"fc1": 8, "fc2": 4}), (2, {"fc1": 4, "fc2": 2})):
        assert planned[level][1] == expected
        for variant in ("imp", "reinit", "random_prune"):
            masks = masks_lib.load(paths.run(0, level, variant).mask)
            kept = structure.kept_units(groups, masks)
            assert {k: int(v.sum()) for k, v in kept.items()} == expected, (level, variant)
            # whole units: every kept unit's column is whole apart from the rows of removed inputs
            assert np.array_equal(masks["fc2/kernel"], np.outer(kept["fc1"], kept["fc2"]).astype(np.float32))
            row = rows[(level, variant)]
            assert float(row["density"]) == pytest.approx(masks_lib.density(masks))
            assert int(row["remaining_weights"]) == planned[level][0]
            assert float(row["units_kept"]) == pytest.approx(sum(expected.values()) / 24)
    assert rows[(0, "imp")]["units_kept"] == "1.0"
    imp_masks = masks_lib.load(paths.run(0, 1, "imp").mask)
    random_masks = masks_lib.load(paths.run(0, 1, "random_prune").mask)
    assert not np.array_equal(imp_masks["fc1/kernel"], random_masks["fc1/kernel"])


def test_unstructured_results_leave_units_kept_empty(tmp_path):
    config = small_config(tmp_path, levels=1, iterations=20, eval_every=20)
    imp.run_experiment(config)
    with open(ExperimentPaths.of(config.run.output_dir, config.experiment_name).results) as f:
        assert {r["units_kept"] for r in csv.DictReader(f)} == {""}


def test_n_of_m_imp_levels_keep_n_of_every_m(tmp_path):
    config = small_config(tmp_path, levels=1, iterations=20, eval_every=20, pruning_structure="n_of_m")
    imp.run_experiment(config)
    paths = ExperimentPaths.of(config.run.output_dir, config.experiment_name)
    masks = masks_lib.load(paths.run(0, 1, "imp").mask)
    assert (masks["fc1/kernel"].reshape(196, 4, 16).sum(axis=1) == 2).all()  # 784 rows, 2 of every 4
    assert masks["output/kernel"].all()


def _bn_model():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="d")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def test_bn_l1_adds_the_penalty_on_gammas_only_and_zero_adds_nothing():
    config = small_config("/tmp/unused").training
    keras.utils.set_random_seed(0)
    plain = Trainer(tf.distribute.get_strategy(), _bn_model(), config, 8)
    assert plain.bn_gammas == []
    model = _bn_model()
    trainer = Trainer(tf.distribute.get_strategy(), model, config.__class__(**{**config.__dict__, "bn_l1": 0.5}), 8)
    assert [v.name for v in trainer.bn_gammas] == [model.get_layer("bn").gamma.name]
    images, labels = tf.zeros((8, 4)), tf.zeros((8,), tf.int64)
    gamma_before = model.get_layer("bn").gamma.numpy().copy()
    trainer._step(images, labels)  # pylint: disable=protected-access
    # zero inputs: the data gradient of gamma is 0, so only the penalty moves it (down, from 1)
    assert (model.get_layer("bn").gamma.numpy() < gamma_before).all()
