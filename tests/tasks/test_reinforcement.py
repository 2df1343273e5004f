"""Reinforcement learning on CartPole-v1: REINFORCE's numbers by hand, seeded and resumable runs,
exact masks, the shipped flagfile end to end, and one-line errors for environments it cannot use."""

import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from conftest import REPO, small_config
from stop_hook import StopAt, train_dense
from tf_lottery import data, main as main_lib, models
from tf_lottery.config import ConfigError
from tf_lottery.experiment import files
from tf_lottery.experiment.paths import ExperimentPaths
from tf_lottery.experiment.results import read_metrics
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.tasks import reinforcement as rl
from tf_lottery.tasks.reinforcement_trainer import EpisodeWindow, PolicyTrainer, policy_gradient_loss
from tf_lottery.training import checkpoints

CARTPOLE = "gym:CartPole-v1"
# Short runs: 4 episodes an update, a small policy, a rate that moves it within 30 updates.
TINY = dict(dataset=CARTPOLE, model="policy_mlp", hidden_units=(16, 16), batch_size=4, iterations=30,
            eval_every=10, checkpoint_every=10, learning_rate=1e-2)


def _config(tmp_path, **overrides):
    return small_config(tmp_path, **{**TINY, **overrides})


def _trainer(config, seed=3):
    info = data.describe(config.data.dataset)
    model = models.build("policy_mlp", info.input_shape, info.num_classes, seed=seed,
                         hidden_units=config.model.hidden_units)
    trainer = PolicyTrainer(tf.distribute.get_strategy(), model, config, info)
    trainer.reset(0)
    return trainer, info


def test_the_environment_describes_itself_and_loads_no_examples():
    info = data.describe(CARTPOLE)
    assert (info.input_shape, info.num_classes, info.task) == ((4,), 2, "reinforcement")
    splits = data.load(CARTPOLE)
    assert splits.info == info and splits.train_images.shape == (0, 4) and splits.train_images.dtype == np.float32
    assert splits.test_labels.shape == (0,) and splits.test_labels.dtype == np.int64
    assert "475" in rl.availability(CARTPOLE) and "unavailable" in rl.availability("gym:NoSuchEnv-v0")
    policy = models.build("policy_mlp", (4,), 2)
    shapes = {v.name: tuple(v.shape) for v in policy.trainable_weights}
    assert shapes == {"fc1/kernel:0": (4, 64), "fc1/bias:0": (64,), "fc2/kernel:0": (64, 64), "fc2/bias:0": (64,),
                      "output/kernel:0": (64, 2), "output/bias:0": (2,)}
    assert [layer.activation.__name__ for layer in policy.layers[1:]] == ["tanh", "tanh", "linear"]


def test_advantages_and_loss_are_the_hand_computed_ones():
    long, short = (rl.Episode(np.zeros((n, 4), np.float32), np.zeros(n, np.int64), np.ones(n)) for n in (3, 1))
    np.testing.assert_allclose(rl.returns_to_go(np.ones(3), 0.5), [1.75, 1.5, 1.0])
    # Step 0: both episodes run, baseline (1.75 + 1) / 2; steps 1 and 2: only the long one, advantage 0.
    first, second = rl.advantages([long, short], 0.5)
    np.testing.assert_allclose(first, [0.375, 0.0, 0.0])
    np.testing.assert_allclose(second, [-0.375])
    batch = rl.make_batch([long, short], 0.5)
    np.testing.assert_array_equal(batch.returns, [3.0, 1.0])
    np.testing.assert_allclose(batch.advantages, [0.375, 0, 0, -0.375])

    logits = np.array([[0.0, math.log(3.0)], [1.0, 1.0], [2.0, 0.0], [math.log(4.0), 0.0]], np.float32)
    actions = np.array([1, 0, 1, 0], np.int64)
    # pi(a|s): 3/4, 1/2, 1/(1+e^2), 4/5; loss = -(log(3/4) * 0.375 + log(4/5) * -0.375) / 2 episodes.
    expected = -(math.log(0.75) * 0.375 - math.log(0.8) * 0.375) / 2
    loss = policy_gradient_loss(tf.constant(logits), tf.constant(actions), tf.constant(batch.advantages), 2.0)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_sampling_follows_the_softmax_and_training_seeds_are_never_test_seeds():
    choose = rl.sampler(np.random.default_rng(0))
    logits = np.tile(np.array([[0.0, math.log(3.0)]]), (20000, 1))
    assert np.mean(choose(logits)) == pytest.approx(0.75, abs=0.01)
    seeds = {rl.training_seed(7, t, e) for t in range(50) for e in range(16)}
    assert len(seeds) == 800 and all(s % 2 == 1 for s in seeds) and not seeds & set(rl.TEST_SEEDS)


def test_the_episode_window_keeps_the_last_100_returns_oldest_first():
    window = EpisodeWindow(4)
    window.add(np.arange(3.0))
    np.testing.assert_array_equal(window.values(), [0, 1, 2])
    window.add(np.arange(3.0, 7.0))
    np.testing.assert_array_equal(window.values(), [3, 4, 5, 6])


def test_validation_reads_the_last_100_episodes_and_solves_only_on_a_full_window(tmp_path):
    trainer, info = _trainer(_config(tmp_path))
    sets = rl.evaluation_sets(None, info)
    empty = trainer.evaluate(sets["validation"])
    assert math.isnan(empty["loss"]) and "return" not in empty and empty["solved"] == 0.0
    trainer.window.add(np.full(99, 500.0))
    assert trainer.evaluate(sets["validation"]) == {"loss": -500.0, "return": 500.0, "solved": 0.0}
    trainer.window.add(np.array([400.0]))
    assert trainer.evaluate(sets["validation"]) == {"loss": -499.0, "return": 499.0, "solved": 1.0}
    trainer.reset_train_metrics()  # after an evaluation: the history stays
    assert trainer.evaluate(sets["validation"])["return"] == 499.0
    trainer.reset(0)  # a new run: it goes
    assert "return" not in trainer.evaluate(sets["validation"])


def _train_updates(config, data_seed, updates, masks=None):
    trainer, _ = _trainer(config)
    if masks is not None:
        masks_lib.apply_masks(trainer.model, masks)
    trainer.train(rl.training_stream(config, data_seed, 0), updates)
    return trainer


def test_same_seed_same_run_bit_for_bit_and_pruned_weights_stay_zero(tmp_path):
    config = _config(tmp_path)
    model = _trainer(config)[0].model
    rng = np.random.default_rng(0)
    masks = {path: (rng.random(m.shape) < 0.3).astype(np.float32) for path, m in masks_lib.ones_like_model(model).items()}
    first, second = (_train_updates(config, 5, 6, masks) for _ in range(2))
    other = _train_updates(config, 6, 6, masks)
    assert first.train_metrics() == second.train_metrics() != other.train_metrics()
    np.testing.assert_array_equal(first.window.values(), second.window.values())
    weights = checkpoints.weights_by_name(first.model)
    for name, value in checkpoints.weights_by_name(second.model).items():
        np.testing.assert_array_equal(value, weights[name])
    assert int(first.iteration.numpy()) == 6 and first.train_metrics()["episodes"] == 24
    for path, mask in masks_lib.get_masks(first.model).items():
        value = weights[f"{path}:0"]
        assert np.all(value[mask == 0] == 0.0) and np.all(value[mask == 1] != 0.0), path


def _run(tmp_path, name, hooks=()):
    config = _config(tmp_path)
    root = ExperimentPaths.of(str(tmp_path), "rl").root
    result = train_dense(config, root, name, hooks, seed=3, data_seed=11)
    with open(f"{root}/{name}/metrics.csv") as f:
        metrics = f.read()
    return result, metrics, files.read_weights(f"{root}/{name}/final_weights.npz")


def test_a_resumed_run_equals_the_uninterrupted_run(tmp_path):
    whole, whole_metrics, whole_weights = _run(tmp_path, "whole")
    # Stopped at 25, resumed from the checkpoint at 20: the validation window at 30 holds episodes from before it.
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "resumed", hooks=[StopAt(25)])
    assert os.path.exists(tmp_path / "rl" / "resumed" / "checkpoints" / "ckpt-20.index")
    resumed, metrics, weights = _run(tmp_path, "resumed")
    assert metrics == whole_metrics
    for a, b in zip(weights, whole_weights):
        np.testing.assert_array_equal(a, b)
    for key in ("final_test_return", "early_stop_test_return", "best_validation_return", "solved_iteration",
                "early_stop_iteration"):
        assert resumed[key] == whole[key], key
    rows = read_metrics(str(tmp_path / "rl" / "resumed" / "metrics.csv"))
    returns = {r["iteration"]: r["value"] for r in rows if r["split"] == "validation" and r["metric"] == "return"}
    assert sorted(returns) == [10, 20, 30] and math.isfinite(whole["best_validation_return"])


def _main_in_process(args, capsys):
    main_lib.define_flags()
    try:
        try:
            code = main_lib.main(main_lib._parse_flags(["tf_lottery", *args]))  # pylint: disable=protected-access
        except SystemExit as exit_:
            code = exit_.code
    finally:
        flags.FLAGS.unparse_flags()
    return code, capsys.readouterr().err


def test_the_cartpole_flagfile_runs_two_levels_with_both_controls(tmp_path, capsys):
    code, stderr = _main_in_process(["--flagfile=flags/cartpole.cfg", f"--output_dir={tmp_path}", "--levels=2",
                                     "--iterations=10", "--eval_every=5", "--batch_size=4",
                                     "--noprogress"], capsys)
    assert code in (0, None), stderr
    with open(tmp_path / "cartpole" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["level"], r["variant"]) for r in rows] == [
        ("0", "imp"), ("1", "imp"), ("1", "reinit"), ("1", "random_prune"),
        ("2", "imp"), ("2", "reinit"), ("2", "random_prune")]
    for row in rows:
        # 10 updates of 4 episodes never fill the 100-episode window that "solved" needs.
        assert 8 <= float(row["final_test_return"]) <= 500 and row["solved_iteration"] == "-1"
        assert float(row["best_validation_return"]) > 0 and float(row["early_stop_test_return"]) > 0
    assert float(rows[4]["density"]) == pytest.approx(0.64, abs=0.01)


@pytest.mark.parametrize("env,fragment", [("gym:NoSuchEnv-v0", "unknown gymnasium environment 'NoSuchEnv-v0'"),
                                          ("gym:Pendulum-v1", "Pendulum-v1 has Box actions")])
def test_an_environment_it_cannot_use_is_one_line_and_exit_2(tmp_path, capsys, env, fragment):
    code, stderr = _main_in_process(["--flagfile=flags/cartpole.cfg", f"--output_dir={tmp_path / 'out'}",
                                     f"--dataset={env}"], capsys)
    assert code == 2 and stderr.count("\n") == 1 and fragment in stderr, stderr
    assert not (tmp_path / "out").exists()


def test_policy_training_refuses_what_it_does_not_do(tmp_path):
    config = _config(tmp_path)
    info = data.describe(CARTPOLE)
    model = models.build("policy_mlp", (4,), 2)
    strategy = tf.distribute.get_strategy()
    with pytest.raises(ConfigError, match="--mixed_precision"):
        PolicyTrainer(strategy, model, config.replace(mixed_precision="mixed_bfloat16"), info)
    with pytest.raises(ConfigError, match="gmp"):
        PolicyTrainer(strategy, model, config, info, wrap=object())

    class TwoReplicas:  # a strategy's one property the trainer checks first
        num_replicas_in_sync = 2

    with pytest.raises(ConfigError, match="--strategy: .* one replica, not 2"):
        PolicyTrainer(TwoReplicas(), model, config, info)


def test_importing_the_package_and_its_data_loads_no_gymnasium():
    code = "import sys, tf_lottery, tf_lottery.data; print('gymnasium' in sys.modules, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
