"""--parallel_runs: runs trained side by side in one TrainerGroup give exactly the results
of the same runs trained one by one (same kernels, so bit for bit), whatever their starts
and ends; auto groups only where it was measured faster."""

import csv
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import small_config
from tf_lottery import models
from tf_lottery.config import ConfigError
from tf_lottery.experiment import files
from tf_lottery.lottery import imp
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training import loop
from tf_lottery.training.run import InitialWeights, RunSpec, train, train_group
from tf_lottery.training.workbench import Workbench, fresh_weights


def _rows(root):
    with open(os.path.join(root, "results.csv")) as f:
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(f)]


def _weights(root):
    found = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "final_weights.npz"), recursive=True)):
        with np.load(path) as values:
            found[os.path.relpath(path, root)] = {k: values[k] for k in values.files}
    return found


@pytest.fixture
def group_calls(monkeypatch):
    calls = []
    original = loop.TrainerGroup.train

    def counted(self, iterators, steps):
        calls.append(len(self.trainers))
        return original(self, iterators, steps)

    monkeypatch.setattr(loop.TrainerGroup, "train", counted)
    return calls


def test_an_experiment_side_by_side_equals_it_one_by_one(tmp_path, group_calls):
    # XLA on, as auto trains groups (test_members_... below covers the plain step).
    settings = dict(controls=("reinit", "random_prune"), replicates=2, levels=1, rewind_iteration=20, jit_compile="on")
    alone = small_config(tmp_path, experiment_name="alone", parallel_runs="1", **settings)
    imp.run_experiment(alone)
    assert not group_calls
    together = small_config(tmp_path, experiment_name="together", parallel_runs="4", **settings)
    imp.run_experiment(together)
    # Level L's tickets beside level L-1's controls, 4 at a time: the 2 tickets, then the 4 controls.
    assert max(group_calls) == 4
    a, b = (os.path.join(tmp_path, name) for name in ("alone", "together"))
    assert _rows(a) == _rows(b) and len(_rows(a)) == 2 * (1 + 3)
    weights_a, weights_b = _weights(a), _weights(b)
    assert weights_a.keys() == weights_b.keys()
    for path in weights_a:
        for name in weights_a[path]:
            np.testing.assert_array_equal(weights_a[path][name], weights_b[path][name], err_msg=f"{path} {name}")
    for replicate in (0, 1):  # θk, written by a hook of a grouped run
        theta = f"replicate_{replicate}/theta_rewind.npz"
        if os.path.exists(os.path.join(a, theta)):
            for x, y in zip(files.read_weights(os.path.join(a, theta)), files.read_weights(os.path.join(b, theta))):
                np.testing.assert_array_equal(x, y)


def test_members_with_other_starts_and_ends_equal_their_runs_alone(tmp_path, group_calls):
    config = small_config(tmp_path, iterations=80, eval_every=20, checkpoint_every=40, jit_compile="off")
    root = os.path.join(tmp_path, "exp")
    with Workbench(None, root) as bench:
        info = bench.splits(config).info
        files.write_weights(os.path.join(root, "theta.npz"), *fresh_weights(config, info, seed=5))
        dense = masks_lib.ones_like_model(bench.trainer(config).model)
        half = {k: (np.arange(v.size).reshape(v.shape) % 2).astype(np.float32) for k, v in dense.items()}

        def specs(folder):
            init = InitialWeights.from_file(os.path.join(root, "theta.npz"), "theta_0")
            return [
                RunSpec(directory=os.path.join(root, folder, "a"), config=config, replicate=0, level=0, name="a",
                        masks=dense, init=init, data_seed=1),
                RunSpec(directory=os.path.join(root, folder, "b"), config=config, replicate=0, level=1, name="b",
                        masks=half, init=init, start_iteration=30, data_seed=2),  # stops fall elsewhere
                RunSpec(directory=os.path.join(root, folder, "c"), config=config, replicate=0, level=1, name="c",
                        masks=half, init=InitialWeights.fresh(7), stop_iteration=60, data_seed=3),  # ends before a
            ]

        alone = [train(spec, bench) for spec in specs("alone")]
        assert not group_calls
        together = train_group(specs("together"), bench)
        assert group_calls and max(group_calls) == 3 and min(group_calls) == 2
        for x, y in zip(alone, together):
            assert {k: v for k, v in x.items() if "seconds" not in k} == {k: v for k, v in y.items() if "seconds" not in k}
        for name in "abc":
            for x, y in zip(files.read_weights(os.path.join(root, "alone", name, "final_weights.npz")),
                            files.read_weights(os.path.join(root, "together", name, "final_weights.npz"))):
                np.testing.assert_array_equal(x, y)
        # A second call reads every result and trains nothing.
        group_calls.clear()
        assert train_group(specs("together"), bench) == together and not group_calls


@pytest.mark.parametrize("value", ["0", "-2", "two", ""])
def test_a_bad_parallel_runs_value_is_one_clear_error(tmp_path, value):
    with pytest.raises(ConfigError, match="parallel_runs"):
        small_config(tmp_path, parallel_runs=value)


def test_auto_groups_only_where_measured_faster():
    strategy = tf.distribute.get_strategy()
    lenet = models.build("lenet300_100", (28, 28, 1), 10, seed=0)
    conv = models.build("conv2", (32, 32, 3), 10, seed=0)
    assert loop.parallel_width("auto", strategy, 50000, lenet) == loop.AUTO_PARALLEL_RUNS
    assert loop.parallel_width("auto", strategy, 100, lenet) == 1  # too short to earn back the compilation
    assert loop.parallel_width("auto", strategy, 50000, conv) == 1
    assert loop.parallel_width("3", strategy, 100, conv) == 3
