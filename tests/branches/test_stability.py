"""The stability branch: the line between two copies, measured right; replayed θk exact;
resumable after kill -9; BatchNorm statistics interpolated or recomputed."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow.python.framework import config as framework_config

from branch_helpers import copy_of, deterministic_parent, run_branch
from conftest import REPO, kill_9_once_written, small_config
from tf_lottery import models
from tf_lottery.branches import runner
from tf_lottery.branches.base import Cell
from tf_lottery.branches.stability import Stability, StabilityOptions, barrier, read_curve
from tf_lottery.experiment import files
from tf_lottery.experiment.reader import Experiment
from tf_lottery.lottery import imp
from tf_lottery.models.resnet import cifar_resnet
from tf_lottery.pruning import prunable
from tf_lottery.training import interpolation
from tf_lottery.training.workbench import Workbench

QUICK = ("--noprogress", "--interpolation_points=5", "--train_eval_examples=500", "--deterministic")


@models.register("tiny_bn")
def tiny_bn(input_shape, num_classes):
    """A stem and one residual block of 4 filters, BatchNorm after each convolution."""
    return cifar_resnet(input_shape, num_classes, stage_filters=(4,), blocks=1, name="tiny_bn")


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished deterministic experiment, levels 0-1, rewinding to θ20, with random pruning."""
    with deterministic_parent(tmp_path_factory.mktemp("parent"), controls=("random_prune",),
                              rewind_iteration=20) as (root, _):
        yield root




def branch_folder(root, level):
    [folder] = glob.glob(os.path.join(root, "replicate_0", f"level_{level:02d}", "branch_stability_*"))
    return folder


def test_the_line_starts_and_ends_at_the_copies_and_the_table_holds_the_pair(parent, tmp_path):
    root = copy_of(parent, tmp_path / "a")
    assert run_branch(f"--experiment_dir={root}", "--branch=stability", "--levels=1", "--variants=imp,random_prune",
                      "--rewind_iterations=0,20", *QUICK) == 0
    experiment = Experiment.open(root)
    table = experiment.branch_table("stability")
    assert [(r["level"], r["variant"], r["rewind_iteration"]) for r in table] == [
        (1, "imp", 0), (1, "imp", 20), (1, "random_prune", 0), (1, "random_prune", 20)]
    dense = experiment.result(0, 0, "imp")
    for row in table:
        folder = branch_folder(root, row["level"])
        key = f"{row['variant']}_data_k{row['rewind_iteration']}"
        copies = [files.read_json(os.path.join(folder, f"{key}_copy{c}", "result.json")) for c in (0, 1)]
        curve = [p for p in read_curve(os.path.join(folder, f"interpolation_{key}.csv")) if p["split"] == "test"]
        assert [p["alpha"] for p in curve] == [0.0, 0.25, 0.5, 0.75, 1.0]
        # W(α) = α·W1 + (1-α)·W2: α=1 is copy 0, α=0 is copy 1, each with the error its run measured
        # (to 1e-6 on 10,000 test examples: the same count of errors; the run stores a float32 accuracy).
        assert curve[-1]["error"] == pytest.approx(1 - copies[0]["final_test_accuracy"], abs=1e-6)
        assert curve[0]["error"] == pytest.approx(1 - copies[1]["final_test_accuracy"], abs=1e-6)
        errors = np.array([p["error"] for p in curve])
        assert row["instability_test"] == pytest.approx(barrier(errors))
        assert row["endpoint_test_error"] == pytest.approx((errors[0] + errors[-1]) / 2)
        assert row["density"] == pytest.approx(copies[0]["density"])
        # the level-1 mask cost level 0's run; each copy trains from k to the end
        assert row["iterations_spent"] == dense["iterations_trained"] + sum(c["iterations_trained"] for c in copies)
        assert copies[0]["iterations_trained"] == dense["iterations_trained"] - row["rewind_iteration"]
        assert row["dense_test_accuracy"] == pytest.approx(dense["final_test_accuracy"])
        assert row["l2_distance"] > 0 and 0 <= row["disagreement"] <= 1, "two data orders give two networks"
        assert row["stable"] == (row["instability_test"] < 0.02)
        starts = {files.read_json(os.path.join(folder, f"{key}_copy{c}", "run.json"))["start_iteration"] for c in (0, 1)}
        assert starts == {row["rewind_iteration"]}
        seeds = {files.read_json(os.path.join(folder, f"{key}_copy{c}", "run.json"))["data_seed"] for c in (0, 1)}
        assert len(seeds) == 2
    level1 = experiment.masks(0, 1, "imp")
    copy = files.read_masks(os.path.join(branch_folder(root, 1), "imp_data_k0_copy0", "mask.npz"))
    assert all(np.array_equal(level1[p], copy[p]) for p in level1), "the copies keep the cell's mask"


def test_the_mask_stays_exact_all_along_the_line(parent):
    experiment = Experiment.open(parent)
    masks = experiment.masks(0, 1, "imp")
    w1 = experiment.final_weights(0, 1, "imp")
    w2 = [w * 0.5 + 0.1 * np.sign(w) for w in w1]  # another point with the same zeros
    with Workbench(None, parent) as bench:
        model = bench.trainer(experiment.config).model
        line = interpolation.Line(model, masks)
        for alpha in (0.0, 1 / 3, 0.5, 0.9, 1.0):
            line.set(alpha, w1, w2)
            for weight in prunable.prunable_weights(model):
                values, mask = weight.variable.numpy(), masks[weight.path]
                assert np.all(values[mask == 0] == 0), f"{weight.path} at alpha={alpha}"
                np.testing.assert_array_equal(weight.mask.numpy(), mask)
        line.set(1.0, w1, w2)
        assert all(np.array_equal(a, b) for a, b in zip(interpolation.interpolate(1.0, w1, w2), w1))
        assert all(np.array_equal(a, b) for a, b in zip(interpolation.interpolate(0.0, w1, w2), w2))


class SameSeed(Stability):
    """Both copies with one data order: under op determinism, the same network twice."""

    def copy_data_seed(self, cell, copy):
        return super().copy_data_seed(cell, 0)


def test_a_pair_with_one_data_order_has_no_instability_and_no_distance(parent, tmp_path):
    root = copy_of(parent, tmp_path / "b")
    experiment = Experiment.open(root)
    branch = SameSeed(experiment, StabilityOptions(interpolation_points=4, train_eval_examples=500),
                      {"progress": False})
    with Workbench(None, root) as bench:
        [row] = runner.run_branch(branch, [Cell(0, 1, "imp")], bench)
    assert row["instability_test"] == 0 and row["instability_train"] == 0
    assert row["l2_distance"] == 0 and row["disagreement"] == 0


def test_a_replayed_theta_k_is_the_one_the_experiment_saved(parent, tmp_path):
    root = copy_of(parent, tmp_path / "c")
    saved = os.path.join(root, "replicate_0", "theta_rewind.npz")
    os.rename(saved, saved + ".kept")  # as if the experiment had never saved θ20
    experiment = Experiment.open(root)
    assert experiment.dense_weights_at(0, 20).endswith("theta_at_20.npz")
    branch = Stability(experiment, StabilityOptions(rewind_iterations=(20,)), {"progress": False})
    with Workbench(None, root) as bench:
        branch.replay_dense(0, [20, 0], bench)
    replayed, kept = files.read_weights(experiment.dense_weights_at(0, 20)), files.read_weights(saved + ".kept")
    assert len(replayed) == len(kept) and all(np.array_equal(a, b) for a, b in zip(replayed, kept))
    assert not os.path.exists(os.path.join(root, "replicate_0", "replay")), "the replay's folder is removed"


def test_pair_init_trains_two_initialisations_with_the_same_mask(parent, tmp_path, capsys):
    root = copy_of(parent, tmp_path / "d")
    assert run_branch(f"--experiment_dir={root}", "--branch=stability", "--levels=1", "--pair=init", *QUICK) == 0
    [row] = Experiment.open(root).branch_table("stability")
    assert (row["pair"], row["rewind_iteration"]) == ("init", 0)
    folder = branch_folder(root, 1)
    inits = [files.read_json(os.path.join(folder, f"imp_init_k0_copy{c}", "run.json"))["init"] for c in (0, 1)]
    assert inits[0]["label"] == inits[1]["label"] == "fresh" and inits[0]["seed"] != inits[1]["seed"]
    capsys.readouterr()
    # Asking for another part adds it beside the first: neither retrained nor lost.
    before = os.path.getmtime(os.path.join(folder, "imp_init_k0_copy0", "result.json"))
    assert run_branch(f"--experiment_dir={root}", "--branch=stability", "--levels=1", "--rewind_iterations=0",
                      *QUICK) == 0
    table = Experiment.open(root).branch_table("stability")
    assert sorted(r["pair"] for r in table) == ["data", "init"] and len({r["branch_hash"] for r in table}) == 1
    assert os.path.getmtime(os.path.join(folder, "imp_init_k0_copy0", "result.json")) == before


@pytest.mark.parametrize("args, message", [
    (("--pair=init", "--rewind_iterations=20"), "--rewind_iterations: --pair=init trains fresh initialisations"),
    (("--rewind_iterations=60",), "--rewind_iterations: 60 is not before the end of training (60 iterations)"),
    (("--rewind_iterations=0,0",), "--rewind_iterations: lists an iteration twice"),
    (("--interpolation_points=1",), "--interpolation_points: must be >= 2"),
    (("--batchnorm=average",), "--batchnorm"),
    (("--pair=other",), "--pair"),
])
def test_bad_options_are_one_line_exit_2(parent, capsys, args, message):
    code = run_branch(f"--experiment_dir={parent}", "--branch=stability", *args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


STABILITY_ARGS = ("--branch=stability", "--levels=1", "--rewind_iterations=0", "--iterations=120", "--eval_every=40",
                  "--checkpoint_every=20", *QUICK)


def test_stability_survives_kill_9_and_resumes_to_the_uninterrupted_numbers(parent, tmp_path):
    copies = {name: copy_of(parent, tmp_path / name) for name in ("whole", "killed")}
    assert run_branch(f"--experiment_dir={copies['whole']}", *STABILITY_ARGS) == 0
    command = [sys.executable, "-m", "tf_lottery.branch", f"--experiment_dir={copies['killed']}", *STABILITY_ARGS]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    pattern = os.path.join(copies["killed"], "replicate_0", "level_01", "branch_stability_*", "imp_data_k0_copy1",
                           "checkpoints", "checkpoint")
    # The default timeout is generous: on a loaded CI machine importing TensorFlow alone can take minutes.
    assert kill_9_once_written(command, pattern, env=env), \
        "never reached the second copy (finished or timed out before it)"
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    tables = [Experiment.open(copies[n]).branch_table("stability") for n in ("whole", "killed")]
    assert tables[0] == tables[1]
    curves = [open(glob.glob(os.path.join(copies[n], "replicate_0", "level_01", "branch_stability_*",
                                          "interpolation_imp_data_k0.csv"))[0]).read() for n in ("whole", "killed")]
    assert curves[0] == curves[1]


@pytest.fixture(scope="module")
def batchnorm_parent(tmp_path_factory):
    tf.config.experimental.enable_op_determinism()
    config = small_config(tmp_path_factory.mktemp("bn"), model="tiny_bn", hidden_units=(), levels=0, iterations=40,
                          eval_every=40, checkpoint_every=40, deterministic=True, experiment_name="bn")
    imp.run_experiment(config)
    yield os.path.join(config.run.output_dir, "bn")
    framework_config.disable_op_determinism()


def test_recomputed_batchnorm_statistics_are_the_average_over_the_batches(batchnorm_parent):
    experiment = Experiment.open(batchnorm_parent)
    weights = experiment.final_weights(0, 0, "imp")
    with Workbench(None, batchnorm_parent) as bench:
        model = bench.trainer(experiment.config).model
        line = interpolation.Line(model, experiment.masks(0, 0, "imp"))
        line.set(0.5, weights, weights)
        rng = np.random.default_rng(0)
        batches = [tf.constant(rng.normal(size=(8, 28, 28, 1)).astype(np.float32)) for _ in range(3)]
        stem = interpolation.batchnorm_layers(model)[0]
        conv = keras.Model(model.inputs, model.get_layer("conv_stem").output)
        expected = np.mean([np.mean(conv(b).numpy(), axis=(0, 1, 2)) for b in batches], axis=0)
        momentum = stem.momentum
        assert line.recompute_batchnorm(batches) == 3
        np.testing.assert_allclose(stem.moving_mean.numpy(), expected, rtol=1e-4, atol=1e-5)
        assert stem.momentum == momentum, "the layer's momentum is restored"


def test_batchnorm_option_remeasures_the_same_copies(batchnorm_parent, tmp_path):
    root = copy_of(batchnorm_parent, tmp_path / "bn")
    args = (f"--experiment_dir={root}", "--branch=stability", "--levels=0", "--rewind_iterations=0",
            "--interpolation_points=3", "--train_eval_examples=200", "--noprogress", "--deterministic")
    assert run_branch(*args) == 0
    folder = branch_folder(root, 0)
    result = os.path.join(folder, "imp_data_k0_copy0", "result.json")
    trained = os.path.getmtime(result)
    interpolated = read_curve(os.path.join(folder, "interpolation_imp_data_k0.csv"))
    assert run_branch(*args, "--batchnorm=recompute", "--batchnorm_batches=2") == 0
    [row] = Experiment.open(root).branch_table("stability")
    assert row["batchnorm"] == "recompute" and row["batchnorm_batches"] == 2
    assert os.path.getmtime(result) == trained, "measured again, not trained again"
    recomputed = read_curve(os.path.join(folder, "interpolation_imp_data_k0.csv"))
    assert [p["alpha"] for p in recomputed] == [p["alpha"] for p in interpolated]
    assert [p["loss"] for p in recomputed] != [p["loss"] for p in interpolated]


def test_controls_the_parent_never_trained_are_the_ones_the_imp_loop_trains(parent, monkeypatch):
    experiment = Experiment.open(parent)
    branch = Stability(experiment, StabilityOptions(rewind_iterations=(0,)), {"progress": False})
    [cell] = branch.parts(Cell(0, 1, "random_prune"))
    trained = branch.cell_masks(cell)
    monkeypatch.setattr(Stability, "_in_parent", lambda self, c: False)
    derived = branch.cell_masks(cell)
    assert list(trained) == list(derived) and all(np.array_equal(trained[p], derived[p]) for p in trained)
    assert branch.required_run(cell) == (0, 1, "imp")
    [reinit] = branch.parts(Cell(0, 1, "reinit"))
    [start] = set(branch.starts(reinit))
    assert (start.label, start.seed) == ("fresh", branch.cell_seed(Cell(0, 1, "imp"), "reinit"))


def test_the_two_copies_side_by_side_are_the_copies_one_by_one(parent, tmp_path, monkeypatch):
    from tf_lottery.training import loop  # pylint: disable=import-outside-toplevel

    sizes = []
    original = loop.TrainerGroup.train
    monkeypatch.setattr(loop.TrainerGroup, "train",
                        lambda self, iterators, steps: (sizes.append(len(self.trainers)), original(self, iterators, steps)))
    roots = {}
    for width in ("1", "2"):
        roots[width] = copy_of(parent, tmp_path / width)
        assert run_branch(f"--experiment_dir={roots[width]}", "--branch=stability", "--levels=1",
                          "--rewind_iterations=20", f"--parallel_runs={width}", *QUICK) == 0
        assert bool(sizes) == (width == "2") and set(sizes) <= {2}
    tables = [[{k: v for k, v in row.items() if "seconds" not in k} for row in Experiment.open(roots[w]).branch_table("stability")]
              for w in ("1", "2")]
    assert tables[0] == tables[1] and len(tables[0]) == 1
    for copy in (0, 1):
        found = [glob.glob(os.path.join(branch_folder(roots[w], 1), f"*_copy{copy}", "final_weights.npz")) for w in ("1", "2")]
        for x, y in zip(*(files.read_weights(f[0]) for f in found)):
            np.testing.assert_array_equal(x, y)
