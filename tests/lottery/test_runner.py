"""The experiment runner: artifacts, results.csv values, resets, controls, skipping."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import small_config
from tf_lottery import data, models
from tf_lottery.data import pipeline
from tf_lottery.config import ConfigError
from tf_lottery.experiment.paths import ExperimentPaths
from tf_lottery.lottery import imp
from tf_lottery.training.run import DivergenceError
from tf_lottery.pruning import masks, strategies
from tf_lottery.training import checkpoints, summaries


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    config = small_config(tmp_path_factory.mktemp("runs"), controls=("reinit", "random_prune"), rewind_iteration=20)
    rows = imp.run_experiment(config)
    return config, ExperimentPaths.of(config.run.output_dir, config.experiment_name), rows


def _validation_loss(config, weights, run_masks):
    """Validation loss of `weights` under `run_masks`, computed outside the runner."""
    splits = data.load(config.data.dataset, None, config.data.validation_size, False)
    model = models.build("mlp", splits.info.input_shape, splits.info.num_classes, hidden_units=(16,))
    checkpoints.assign_weights(model, weights)
    masks.apply_masks(model, run_masks)
    logits = model(pipeline.preprocess_fn(splits.info)(splits.validation_images), training=False)
    loss = tf.keras.losses.sparse_categorical_crossentropy(splits.validation_labels, logits, from_logits=True)
    return float(tf.reduce_mean(loss))


def _metric(paths_run, split, metric, iteration):
    for row in summaries.read_metrics(paths_run.metrics):
        if (row["split"], row["metric"], row["iteration"]) == (split, metric, iteration):
            return row["value"]
    raise KeyError((split, metric, iteration))


def test_results_csv_has_a_row_per_run_with_required_columns(experiment):
    config, paths, rows = experiment
    with open(paths.results) as f:
        table = list(csv.DictReader(f))
    required = {"replicate", "level", "variant", "density", "final_test_accuracy", "early_stop_iteration",
                "early_stop_test_accuracy", "best_val_accuracy"}
    assert required <= set(table[0])
    assert [(r["level"], r["variant"]) for r in table] == [
        ("0", "imp"), ("1", "imp"), ("1", "reinit"), ("1", "random_prune"),
        ("2", "imp"), ("2", "reinit"), ("2", "random_prune")]
    sizes = {"fc1/kernel": 784 * 16, "output/kernel": 16 * 10}
    rates = {"fc1/kernel": 0.5, "output/kernel": 0.25}
    for row in table:
        level = int(row["level"])
        expected = sum(strategies.expected_counts(sizes, rates, "layerwise", level).values())
        assert int(row["remaining_weights"]) == expected
        assert float(row["density"]) == pytest.approx(expected / sum(sizes.values()))


def test_result_values_come_from_the_runs_metrics(experiment):
    config, paths, rows = experiment
    for row in rows:
        metrics = summaries.read_metrics(paths.run(0, row["level"], row["variant"]).metrics)
        val_loss = {r["iteration"]: r["value"] for r in metrics if (r["split"], r["metric"]) == ("validation", "loss")}
        test_acc = {r["iteration"]: r["value"] for r in metrics if (r["split"], r["metric"]) == ("test", "accuracy")}
        val_acc = [r["value"] for r in metrics if (r["split"], r["metric"]) == ("validation", "accuracy")]
        stop = min(val_loss, key=val_loss.get)
        assert row["early_stop_iteration"] == stop
        assert row["early_stop_test_accuracy"] == test_acc[stop]
        assert row["final_test_accuracy"] == test_acc[config.training.iterations]
        assert row["best_val_accuracy"] == max(val_acc)
        start = 0 if row["level"] == 0 else config.pruning.rewind_iteration
        assert sorted(val_loss) == list(range(start, config.training.iterations + 1, config.training.eval_every))


def test_theta_files_are_written_once_and_levels_reset_to_theta_k(experiment):
    config, paths, _ = experiment
    theta_0 = checkpoints.read_weights(paths.theta_init(0))
    theta_k = checkpoints.read_weights(paths.theta_rewind(0))
    assert any(not np.array_equal(a, b) for a, b in zip(theta_0, theta_k)), "θk should be trained weights"
    for level in (1, 2):
        run = paths.run(0, level, "imp")
        start_loss = _metric(run, "validation", "loss", config.pruning.rewind_iteration)
        assert start_loss == pytest.approx(_validation_loss(config, theta_k, masks.load(run.mask)), rel=1e-5)
        random_run = paths.run(0, level, "random_prune")
        assert _metric(random_run, "validation", "loss", config.pruning.rewind_iteration) == pytest.approx(
            _validation_loss(config, theta_k, masks.load(random_run.mask)), rel=1e-5)


def test_reinit_trains_the_ticket_mask_from_a_fresh_initialisation(experiment):
    config, paths, _ = experiment
    theta_0 = checkpoints.read_weights(paths.theta_init(0))
    run = paths.run(0, 1, "reinit")
    np.testing.assert_array_equal(masks.load(run.mask)["fc1/kernel"], masks.load(paths.run(0, 1, "imp").mask)["fc1/kernel"])
    start_loss = _metric(run, "validation", "loss", config.pruning.rewind_iteration)
    assert start_loss != pytest.approx(_validation_loss(config, theta_0, masks.load(run.mask)), rel=1e-3)


def test_random_prune_keeps_the_ticket_per_layer_densities(experiment):
    _, paths, _ = experiment
    for level in (1, 2):
        ticket, random = masks.load(paths.run(0, level, "imp").mask), masks.load(paths.run(0, level, "random_prune").mask)
        assert masks.counts(random) == masks.counts(ticket)
        assert not np.array_equal(random["fc1/kernel"], ticket["fc1/kernel"])


def test_iterative_masks_are_nested_and_pruned_weights_end_at_zero(experiment):
    _, paths, rows = experiment
    level1, level2 = masks.load(paths.run(0, 1, "imp").mask), masks.load(paths.run(0, 2, "imp").mask)
    assert all(np.all(level1[n][level2[n] == 1] == 1) for n in level1)
    for row in rows:
        run = paths.run(0, row["level"], row["variant"])
        model = models.build("mlp", (28, 28, 1), 10, hidden_units=(16,))
        checkpoints.load_weights(model, run.final_weights)
        run_masks = masks.load(run.mask)
        for name, kernel in masks.prunable_values(model).items():
            assert np.all(kernel[run_masks[name] == 0] == 0.0)
            assert np.count_nonzero(kernel) == np.count_nonzero(run_masks[name])


def test_artifacts_and_replayable_flags(experiment):
    config, paths, _ = experiment
    run = paths.run(0, 1, "imp")
    for path in (paths.flags, paths.config, paths.dataset, run.mask, run.final_weights, run.metrics, run.result):
        assert os.path.exists(path), path
    assert not os.path.exists(run.checkpoints), "a finished run's checkpoints are removed"
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run.directory))
    with open(paths.flags) as f:
        lines = f.read().split()
    assert "--rewind_iteration=20" in lines and "--controls=reinit,random_prune" in lines
    assert f"--experiment_name={config.experiment_name}" in lines
    metrics = summaries.read_metrics(run.metrics)
    assert {(r["split"], r["metric"]) for r in metrics} >= {
        ("train", "loss"), ("train", "accuracy"), ("train", "learning_rate"), ("validation", "loss"),
        ("validation", "accuracy"), ("test", "loss"), ("test", "accuracy"), ("mask", "density"), ("mask", "density/fc1/kernel")}
    with open(paths.dataset) as f:
        info = json.load(f)
    assert info["train_size"] == 55000 and info["validation_size"] == 5000


def test_rerun_skips_finished_runs_and_keeps_theta(experiment):
    config, paths, rows = experiment
    stamps = {p: os.stat(p).st_mtime_ns for p in paths.result_files() + [paths.theta_init(0), paths.theta_rewind(0)]}
    again = imp.run_experiment(config)
    assert again == rows
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps


def test_more_levels_extend_the_same_experiment(experiment, tmp_path):
    config, paths, rows = experiment
    assert config.replace(levels=5, replicates=3, controls=()).experiment_name == config.experiment_name
    assert config.replace(prune_rate=0.3).experiment_name != config.experiment_name


def test_other_settings_under_the_same_name_are_refused(experiment):
    config, paths, _ = experiment
    before = sorted(os.listdir(paths.root))
    other = config.replace(learning_rate=0.01, experiment_name=config.experiment_name)
    with pytest.raises(ConfigError, match="--learning_rate"):
        imp.run_experiment(other)
    assert sorted(os.listdir(paths.root)) == before


def test_divergence_stops_with_one_line_and_keeps_theta(make_config):
    config = make_config(optimizer="sgd", learning_rate=1e12, levels=0)
    with pytest.raises(DivergenceError) as error:
        imp.run_experiment(config)
    assert "diverged" in str(error.value) and "\n" not in str(error.value)
    assert os.path.exists(ExperimentPaths.of(config.run.output_dir, config.experiment_name).theta_init(0))


def test_oneshot_prunes_level_zero_weights_to_each_level_density(make_config):
    config = make_config(prune_mode="oneshot", levels=2, iterations=40)
    imp.run_experiment(config)
    paths = ExperimentPaths.of(config.run.output_dir, config.experiment_name)
    model = models.build("mlp", (28, 28, 1), 10, hidden_units=(16,))
    checkpoints.load_weights(model, paths.run(0, 0, "imp").final_weights)
    dense = masks.prunable_values(model)
    for level in (1, 2):
        mask = masks.load(paths.run(0, level, "imp").mask)["fc1/kernel"]
        keep = int(mask.sum())
        assert keep == strategies.keep_count(mask.size, 0.5, level)
        assert np.abs(dense["fc1/kernel"][mask == 1]).min() >= np.abs(dense["fc1/kernel"][mask == 0]).max()


def test_replicates_run_separately_fill_one_experiment(make_config):
    first = imp.run_experiment(make_config(replicates=2, replicate=1, levels=1))
    assert {r["replicate"] for r in first} == {1}
    config = make_config(replicates=2, levels=1)
    paths = ExperimentPaths.of(config.run.output_dir, config.experiment_name)
    stamp = os.stat(paths.run(1, 1, "imp").result).st_mtime_ns
    rows = imp.run_experiment(config)
    assert [(r["replicate"], r["level"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert os.stat(paths.run(1, 1, "imp").result).st_mtime_ns == stamp, "replicate 1 was trained twice"
    imp.run_experiment(make_config(replicates=2, replicate=0, levels=1))
    assert "--replicate=" not in open(paths.flags).read(), "flags.cfg replays the whole experiment"
    with pytest.raises(ConfigError, match="--replicate"):
        make_config(replicates=2, replicate=2)
