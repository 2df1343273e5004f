"""The franken branch: task A's ticket frozen bit for bit (kernels, biases, BatchNorm, its head),
its logits the parent's; new tasks only in the weights A freed; --prune_b's exact counts and
resets to the task's own θ0; chained tasks disjoint; the export's signatures reproduce every
task's logits; bad input is one line and writes nothing; a second call trains nothing."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow.python.framework import config as framework_config

from branch_helpers import deterministic_parent, digest, run_branch
from conftest import small_config
from tf_lottery import models
from tf_lottery.branches.base import Cell
from tf_lottery.branches.franken import Franken, FrankenOptions
from tf_lottery.experiment import files
from tf_lottery.experiment.reader import Experiment
from tf_lottery.lottery import imp
from tf_lottery.models.layers import masked_dense
from tf_lottery.pruning import constraint, prunable, strategies
from tf_lottery.training import franken as franken_lib
from tf_lottery.training.workbench import Workbench

QUICK = ("--branch=franken", "--levels=1", "--noprogress", "--deterministic")
CELL = Cell(0, 1, "imp")


@models.register("franken_mlp_bn")
def franken_mlp_bn(input_shape, num_classes):
    """Flatten, a 16-unit masked dense layer, BatchNorm, ReLU, the output layer."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = masked_dense(16, name="fc1")(x)
    x = keras.layers.BatchNormalization(name="fc1_bn")(x)
    x = keras.layers.ReLU(name="fc1_relu")(x)
    return keras.Model(inputs, masked_dense(num_classes, name="output")(x), name="franken_mlp_bn")


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished deterministic experiment (levels 0-1 of a 16-unit MLP on MNIST) and the default
    Frankenmodel over level 1: task B fashion_mnist, separate head."""
    with deterministic_parent(tmp_path_factory.mktemp("franken")) as (root, _):
        before = digest(root)
        assert run_branch(f"--experiment_dir={root}", *QUICK, "--dataset=fashion_mnist") == 0
        yield root, before


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
    """A BatchNorm model's ticket with two chained tasks, shared head, --prune_b and weight decay."""
    tf.config.experimental.enable_op_determinism()
    try:
        config = small_config(tmp_path_factory.mktemp("bn"), model="franken_mlp_bn", hidden_units=(), levels=1,
                              deterministic=True, experiment_name="bn")
        imp.run_experiment(config)
        root = os.path.join(config.run.output_dir, "bn")
        assert run_branch(f"--experiment_dir={root}", *QUICK, "--tasks=fashion_mnist,mnist:5-9", "--head=shared",
                          "--prune_b=0.5", "--weight_decay=0.01") == 0
        yield root
    finally:
        framework_config.disable_op_determinism()


def branch_of(root, **options):
    overrides = {} if options.get("tasks") else {"dataset": "fashion_mnist"}
    if "weight_decay" in options:
        overrides["weight_decay"] = options.pop("weight_decay")
    return Franken(Experiment.open(root), FrankenOptions(**options), overrides=overrides)


def test_task_a_is_frozen_bit_for_bit_and_b_owns_only_what_a_freed(parent):
    root, _ = parent
    experiment = Experiment.open(root)
    table = experiment.branch_table("franken")
    assert sorted((r["task"], r["run"]) for r in table) == [(0, "franken"), (1, "dense_alone"), (1, "franken"),
                                                             (1, "same_budget_alone")]
    [a] = [r for r in table if r["task"] == 0]
    assert a["bit_identical"] is True or a["bit_identical"] == "True"
    assert a["test_accuracy"] == a["test_accuracy_before"]
    assert a["test_accuracy"] == pytest.approx(experiment.result(0, 1, "imp")["final_test_accuracy"], abs=1e-6)
    assert a["owned_fraction"] == pytest.approx(experiment.result(0, 1, "imp")["density"])

    branch = branch_of(root)
    masks_a = experiment.masks(0, 1, "imp")
    with Workbench(None, root) as bench:
        ticket = branch.trained_model(CELL, 0, bench)
        theirs = {w.path: (w.variable.numpy(), w.mask.numpy()) for w in prunable.prunable_weights(ticket)}
        biases = {l.name: l.bias.numpy() for l in constraint.walk_layers(ticket) if getattr(l, "bias", None) is not None}
        model = branch.trained_model(CELL, 1, bench)
        found = franken_lib.parts(model)
        assert [v.name for v in model.trainable_variables] == ["fc1/kernel:0", "output/kernel:0", "output/bias:0"]
        for weight in prunable.prunable_weights(model):
            if weight.path == "output/kernel":
                assert weight.mask.numpy().min() == 1.0, "the separate head is all B's"
                continue
            value, mask = theirs[weight.path]
            assert np.array_equal(mask, masks_a[weight.path])
            assert np.array_equal(found.frozen[weight.path].numpy(), value * mask), "A's kernel, unchanged"
            assert np.array_equal(found.owner[weight.path].numpy() == 0, mask > 0)
            assert np.array_equal(weight.mask.numpy(), 1 - mask), "B's share: exactly what A freed"
            own = weight.variable.numpy()
            assert np.all(own[mask > 0] == 0) and np.count_nonzero(own) > 0.9 * np.count_nonzero(1 - mask)
        assert np.array_equal(model.get_layer("fc1").bias.numpy(), biases["fc1"]), "A's bias, never trained"
        kernel, head_mask, bias = (v.numpy() for v in found.heads[0])
        value, mask = theirs["output/kernel"]
        assert np.array_equal(kernel, value * mask) and np.array_equal(head_mask, mask)
        assert np.array_equal(bias, biases["output"])
        # A's view of the stored Frankenmodel computes the parent's logits, bit for bit.
        images = bench.splits(branch.task_configs[0]).test_images[:500]
        info = bench.splits(branch.task_configs[0]).info
        mine = franken_lib.logits(franken_lib.view_model(model, 0), images, info, 250)
        assert mine.tobytes() == franken_lib.logits(ticket, images, info, 250).tobytes()


def test_the_baselines_are_the_tasks_own_start_with_all_or_just_its_weights(parent):
    root, _ = parent
    folder = glob.glob(os.path.join(root, "replicate_0", "level_01", "branch_franken_*"))[0]
    theta = files.read_weights(os.path.join(folder, "imp_task1_theta_0.npz"))
    share = files.read_masks(os.path.join(folder, "imp_task1_mask_round0.npz"))
    dense = files.read_masks(os.path.join(folder, "imp_task1_dense_alone", "mask.npz"))
    same = files.read_masks(os.path.join(folder, "imp_task1_same_budget_alone", "mask.npz"))
    assert all(dense[k].min() == 1.0 and np.array_equal(same[k], share[k]) for k in share)
    for name in ("imp_task1_dense_alone", "imp_task1_same_budget_alone"):
        assert files.read_json(os.path.join(folder, name, "run.json"))["init"]["file"].endswith("imp_task1_theta_0.npz")
    start = files.read_weights(os.path.join(folder, "imp_task1_initial_weights.npz"))
    assert np.array_equal(start[0], theta[0]), "the Frankenmodel's own kernels start at the same θ0"


def test_each_signature_of_the_export_gives_that_tasks_logits(parent):
    root, _ = parent
    [path] = glob.glob(os.path.join(root, "replicate_0", "level_01", "branch_franken_*", "imp_saved_model"))
    loaded = tf.saved_model.load(path)
    assert sorted(loaded.signatures) == ["task_0", "task_1"]
    branch = branch_of(root)
    with Workbench(None, root) as bench:
        model = branch.trained_model(CELL, 1, bench)
        for task in (0, 1):
            splits = bench.splits(branch.task_configs[task])
            images = splits.test_images[:200]
            served = loaded.signatures[f"task_{task}"](images=tf.constant(images))["logits"].numpy()
            expected = franken_lib.logits(franken_lib.view_model(model, task), images, splits.info, 200)
            np.testing.assert_allclose(served, expected, atol=1e-5)


def test_a_second_identical_call_trains_nothing(parent):
    root, _ = parent
    folder = glob.glob(os.path.join(root, "replicate_0", "level_01", "branch_franken_*"))[0]
    before = digest(folder)
    assert run_branch(f"--experiment_dir={root}", *QUICK, "--dataset=fashion_mnist") == 0
    assert digest(folder) == before


def test_chained_tasks_freeze_batchnorm_and_the_shared_heads_earlier_columns(chained):
    experiment = Experiment.open(chained)
    table = experiment.branch_table("franken")
    assert sorted({(r["after_task"], r["task"], r["run"]) for r in table}) == [
        (1, 0, "franken"), (1, 1, "dense_alone"), (1, 1, "franken"), (1, 1, "same_budget_alone"),
        (2, 0, "franken"), (2, 1, "franken"), (2, 2, "dense_alone"), (2, 2, "franken"), (2, 2, "same_budget_alone")]
    for row in table:
        if row["run"] == "franken" and row["task"] == 0:
            assert row["bit_identical"] in (True, "True") and row["test_accuracy"] == row["test_accuracy_before"]
        if row["run"] == "franken":
            assert 0 <= row["joint_test_accuracy"] <= 1
    after = {(r["after_task"], r["task"]): r["test_accuracy"] for r in table if r["run"] == "franken"}
    assert after[(1, 1)] == after[(2, 1)], "task B's network is the same after task C trained"

    branch = branch_of(chained, tasks=("fashion_mnist", "mnist:5-9"), head="shared", prune_b=0.5,
                       weight_decay=0.01)
    cell = Cell(0, 1, "imp", part=2)
    with Workbench(None, chained) as bench:
        ticket = branch.trained_model(cell, 0, bench)
        bn = {v.name: v.numpy() for v in ticket.get_layer("fc1_bn").weights}
        a_bias, a_head = ticket.get_layer("fc1").bias.numpy(), ticket.get_layer("output").kernel.numpy()
        a_mask = ticket.get_layer("output").kernel_constraint.mask.numpy()
        b_model = branch.trained_model(cell, 1, bench)
        b_kernel = b_model.get_layer("fc1").kernel.numpy() * b_model.get_layer("fc1").kernel_constraint.mask.numpy()
        model = branch.trained_model(cell, 2, bench)
        found = franken_lib.parts(model)
        assert {v.name: v.numpy() for v in model.get_layer("fc1_bn").weights}.keys() == bn.keys()
        for name, value in ((v.name, v.numpy()) for v in model.get_layer("fc1_bn").weights):
            assert np.array_equal(value, bn[name]), f"BatchNorm {name}: A's, through weight decay and training"
        assert np.array_equal(model.get_layer("fc1").bias.numpy(), a_bias)
        assert np.array_equal(found.heads[0][0].numpy(), a_head * a_mask), "the shared head's A columns"
        owner, frozen = found.owner["fc1/kernel"].numpy(), found.frozen["fc1/kernel"].numpy()
        own_mask = model.get_layer("fc1").kernel_constraint.mask.numpy()
        assert np.array_equal(frozen[owner == 1], b_kernel[owner == 1]), "B's weights, frozen for C"
        assert not np.any((own_mask > 0) & (owner >= 0)), "C only where A and B left room"
        rows = franken_lib.ownership(model)
        head_mask = model.get_layer("output").kernel_constraint.mask.numpy()
        assert [r["owned"] for r in rows] == [int(np.sum(owner == 0) + a_mask.sum()),
                                              int(np.sum(owner == 1) + found.heads[1][1].numpy().sum()),
                                              int(own_mask.sum() + head_mask.sum())]


def test_prune_b_keeps_the_exact_count_and_resets_to_the_tasks_own_theta_0(chained):
    folder = glob.glob(os.path.join(chained, "replicate_0", "level_01", "branch_franken_*"))[0]
    for task in (1, 2):
        first = files.read_masks(os.path.join(folder, f"imp_task{task}_mask_round0.npz"))
        second = files.read_masks(os.path.join(folder, f"imp_task{task}_round1", "mask.npz"))
        for path, mask in first.items():
            rate = 0.25 if path.startswith("output/") else 0.5
            assert second[path].sum() == strategies.keep_count(int(mask.sum()), rate, 1), path
            assert np.all(second[path] <= mask), f"{path}: pruned within the task's own share"
        theta = files.read_weights(os.path.join(folder, f"imp_task{task}_theta_0.npz"))
        record = files.read_json(os.path.join(folder, f"imp_task{task}_round1", "run.json"))
        start = files.read_weights(os.path.join(chained, record["init"]["file"]))
        assert np.array_equal(start[0], theta[0]), "survivors reset to the task's own θ0"
    later = files.read_masks(os.path.join(folder, "imp_task2_mask_round0.npz"))["fc1/kernel"]
    b_final = files.read_masks(os.path.join(folder, "imp_task1_round1", "mask.npz"))["fc1/kernel"]
    assert not np.any((later > 0) & (b_final > 0)), "C gets what B's pruning freed, never B's survivors"
    assert later.sum() > 0


@pytest.mark.parametrize("args, message", [
    (("--tasks=fashion_mnist,mnist:5-9",), "--tasks: chaining 2 tasks needs --prune_b > 0"),
    (("--dataset=cifar10",), "--dataset: cifar10 has inputs (32, 32, 3), task A (28, 28, 1); a Frankenmodel's"),
    (("--dataset=fashion_mnist", "--levels=0"), "--levels: level 0 is the dense network; branch franken needs a pruned level"),
    (("--tasks=fashion_mnist", "--dataset=fashion_mnist"), "--tasks: names every task after A; give it without --dataset"),
    ((), "--dataset: task 1 is task A's own data (mnist)"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(parent, capsys, args, message):
    root, _ = parent
    before = digest(root)
    assert run_branch(f"--experiment_dir={root}", "--branch=franken", "--noprogress", *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert digest(root) == before
