"""Evaluation: resident splits give the dataset path's numbers exactly, and --test_every reads
test sparsely without changing a run's early-stopping or final numbers, also across a resumption."""

import pytest
import tensorflow as tf

from conftest import small_config
from stop_hook import StopAt, train_dense
from tf_lottery.experiment.paths import ExperimentPaths
from tf_lottery.experiment.results import read_metrics
from tf_lottery.data import pipeline
from tf_lottery.training.workbench import Workbench

# A learning rate high enough that validation loss rises and falls within 150 iterations.
NOISY = dict(iterations=150, eval_every=10, checkpoint_every=30, learning_rate=0.05)


def test_resident_split_gives_the_dataset_paths_numbers_exactly(tmp_path):
    config = small_config(tmp_path, eval_batch_size=700)  # 10,000 test images: a partial last batch
    with Workbench(None, str(tmp_path)) as bench:
        trainer, splits = bench.trainer(config), bench.splits(config)
        resident = bench.evaluation_sets(config)["test"]
        assert isinstance(resident, pipeline.ResidentSplit)
        dataset = tf.distribute.get_strategy().experimental_distribute_dataset(
            pipeline.evaluation_dataset(splits.test_images, splits.test_labels, splits.info, 700))
        assert trainer.evaluate(resident) == trainer.evaluate(dataset)


def _train(tmp_path, name, test_every, hooks=()):
    config = small_config(tmp_path, test_every=test_every, **NOISY)
    root = ExperimentPaths.of(str(tmp_path), "evaluation").root
    result = train_dense(config, root, name, hooks, seed=3)
    return result, read_metrics(f"{root}/{name}/metrics.csv")


def _series(rows, split):
    return {r["iteration"]: r["value"] for r in rows if r["split"] == split and r["metric"] == "loss"}


def test_test_every_reads_test_at_its_multiples_new_validation_minima_and_the_end_only(tmp_path):
    every_result, every_rows = _train(tmp_path, "every", test_every=0)
    sparse_result, sparse_rows = _train(tmp_path, "sparse", test_every=50)

    validation = _series(sparse_rows, "validation")
    expected, best = set(), float("inf")
    for iteration in sorted(validation):
        if validation[iteration] < best or iteration % 50 == 0 or iteration == NOISY["iterations"]:
            expected.add(iteration)
        best = min(best, validation[iteration])
    assert expected < set(validation), "some evaluations must skip test, or this test proves nothing"
    assert set(_series(sparse_rows, "test")) == expected

    full_test = {(r["iteration"], r["metric"]): r["value"] for r in every_rows if r["split"] == "test"}
    for r in sparse_rows:
        if r["split"] == "test":
            assert r["value"] == full_test[(r["iteration"], r["metric"])]
    for key in ("early_stop_iteration", "early_stop_test_accuracy", "final_iteration", "final_test_accuracy",
                "final_test_loss", "early_stop_validation_loss"):
        assert sparse_result[key] == every_result[key], key


def test_a_resumed_run_reads_test_where_the_uninterrupted_run_did(tmp_path):
    _, whole = _train(tmp_path, "whole", test_every=50)
    validation = _series(whole, "validation")
    # Stop at 110 (resumed from the checkpoint at 90), past a minimum the restarted process must remember.
    assert min(validation[i] for i in validation if i <= 90) < validation[100] and 100 % 50 == 0
    assert min(validation[i] for i in validation if i <= 90) < validation[110]
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "resumed", test_every=50, hooks=[StopAt(110)])
    _, resumed = _train(tmp_path, "resumed", test_every=50)
    assert _series(resumed, "test") == _series(whole, "test")
    assert resumed == whole
