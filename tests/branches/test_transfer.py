"""The transfer branch: masks and starting values carried over exactly; a rebuilt output
layer for another class count; input shapes checked; interrupted runs resume to the
uninterrupted numbers."""

import glob
import os
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from branch_helpers import copy_of, deterministic_parent, run_branch
from conftest import small_config
from stop_hook import StopAt
from tf_lottery import branch as branch_cli
from tf_lottery import data
from tf_lottery.branches.base import Cell
from tf_lottery.branches.transfer import Transfer, TransferOptions
from tf_lottery.data import DatasetInfo
from tf_lottery.errors import UsageError
from tf_lottery.experiment import files
from tf_lottery.experiment.reader import Experiment
from tf_lottery.training.workbench import Workbench

QUICK = ("--noprogress", "--deterministic")


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished deterministic experiment on MNIST: levels 0-1 of a 16-unit MLP."""
    with deterministic_parent(tmp_path_factory.mktemp("source"), name="source") as (root, _):
        yield root




def run_folder(root, level, name):
    [folder] = glob.glob(os.path.join(root, "replicate_0", f"level_{level:02d}", "branch_transfer_*", name))
    return folder


def arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_ticket_without_overrides_is_the_source_run_and_every_mode_keeps_the_densities(parent, tmp_path):
    root = copy_of(parent, tmp_path / "a")
    assert run_branch(f"--experiment_dir={root}", "--branch=transfer", "--levels=1", *QUICK) == 0
    source = Experiment.open(root)
    table = source.branch_table("transfer")
    assert [row["mode"] for row in table] == ["mask_only", "random_ticket", "ticket"]
    assert {row["density"] for row in table} == {source.result(0, 1, "imp")["density"]}
    assert all(row["dataset"] == "mnist" and row["output_layer"] == "transferred" for row in table)

    # ticket: the source's mask and θ0 on the source's data and schedule: the same run, bit for bit.
    ticket = run_folder(root, 1, "imp_ticket")
    for name in ("mask.npz", "final_weights.npz"):
        mine, theirs = arrays(os.path.join(ticket, name)), arrays(os.path.join(root, "replicate_0", "level_01", "imp", name))
        assert mine.keys() == theirs.keys() and all(np.array_equal(mine[k], theirs[k]) for k in mine), name
    assert files.read_json(os.path.join(ticket, "run.json"))["init"]["file"] == "replicate_0/theta_0.npz"

    source_masks = source.masks(0, 1, "imp")
    mask_only, random_ticket = (run_folder(root, 1, n) for n in ("imp_mask_only", "imp_random_ticket"))
    assert all(np.array_equal(files.read_masks(os.path.join(mask_only, "mask.npz"))[k], m) for k, m in source_masks.items())
    drawn = files.read_masks(os.path.join(random_ticket, "mask.npz"))
    for name, mask in source_masks.items():
        assert drawn[name].sum() == mask.sum(), f"{name}: the same survivors per weight"
    assert not np.array_equal(drawn["fc1/kernel"], source_masks["fc1/kernel"]), "at other positions"
    fresh = [files.read_weights(os.path.join(f, "initial_weights.npz"))[0] for f in (mask_only, random_ticket)]
    assert np.array_equal(fresh[0], fresh[1]), "both controls start from the same fresh draw"
    assert not np.array_equal(fresh[0], source.theta_init(0)[0])


def test_another_dataset_and_optimizer_train_the_source_ticket_with_the_target_settings(parent, tmp_path):
    root = copy_of(parent, tmp_path / "b")
    target = ("--branch=transfer", "--levels=1", "--dataset=fashion_mnist", "--optimizer=momentum",
              "--learning_rate=0.05", "--iterations=20", *QUICK)
    assert run_branch(f"--experiment_dir={root}", "--modes=ticket", *target) == 0
    [row] = Experiment.open(root).branch_table("transfer")
    assert (row["mode"], row["dataset"], row["optimizer"], row["learning_rate"], row["iterations"]) == \
        ("ticket", "fashion_mnist", "momentum", 0.05, 20)
    ticket = run_folder(root, 1, "imp_ticket")
    record = files.read_json(os.path.join(ticket, "run.json"))
    assert record["config"]["dataset"] == "fashion_mnist" and record["start_iteration"] == 0
    assert record["init"]["file"] == "replicate_0/theta_0.npz"
    mask = files.read_masks(os.path.join(ticket, "mask.npz"))
    assert all(np.array_equal(mask[k], m) for k, m in Experiment.open(root).masks(0, 1, "imp").items())
    # Adding a mode later trains only that mode.
    before = os.path.getmtime(os.path.join(ticket, "result.json"))
    assert run_branch(f"--experiment_dir={root}", "--modes=ticket,mask_only", *target) == 0
    assert [r["mode"] for r in Experiment.open(root).branch_table("transfer")] == ["mask_only", "ticket"]
    assert os.path.getmtime(os.path.join(ticket, "result.json")) == before


@pytest.fixture
def mock_letters():
    """EMNIST letters (28x28x1, 37 classes) as random images: another class count than MNIST's."""
    data.load.cache_clear()
    with tfds.testing.mock_data(num_examples=64):
        yield
    data.load.cache_clear()  # no later test may get these random images


def test_another_class_count_rebuilds_the_output_layer_at_the_source_density(parent, tmp_path, mock_letters):
    root = copy_of(parent, tmp_path / "c")
    small = ("--batch_size=8", "--iterations=8", "--eval_every=8", "--checkpoint_every=8", "--validation_size=16")
    assert run_branch(f"--experiment_dir={root}", "--branch=transfer", "--levels=1", "--dataset=emnist/letters",
                      *small, *QUICK) == 0
    source = Experiment.open(root)
    table = source.branch_table("transfer")
    assert {row["output_layer"] for row in table} == {"rebuilt"}
    source_masks = source.masks(0, 1, "imp")
    output_density = source_masks["output/kernel"].mean()
    ticket = run_folder(root, 1, "imp_ticket")
    mask = files.read_masks(os.path.join(ticket, "mask.npz"))
    assert mask["output/kernel"].shape == (16, 37)
    assert mask["output/kernel"].sum() == round(output_density * 16 * 37)
    assert np.array_equal(mask["fc1/kernel"], source_masks["fc1/kernel"])
    names = files.read_weight_names(os.path.join(ticket, "initial_weights.npz"))
    start = files.read_weights(os.path.join(ticket, "initial_weights.npz"))
    theta = source.theta_init(0)
    for name, value, old in zip(names, start, theta):
        if name.startswith("output/"):
            assert value.shape[-1] == 37
        else:
            assert np.array_equal(value, old), f"{name}: the source's starting value"
    mask_only = files.read_masks(os.path.join(run_folder(root, 1, "imp_mask_only"), "mask.npz"))
    assert np.array_equal(mask_only["output/kernel"], mask["output/kernel"]), "ticket and mask_only: one output mask"

    assert run_branch(f"--experiment_dir={root}", "--branch=transfer", "--levels=1", "--dataset=emnist/letters",
                      "--modes=ticket", "--output_mask=dense", *small, *QUICK) == 0
    dense = [f for f in glob.glob(os.path.join(root, "replicate_0", "level_01", "branch_transfer_*", "imp_ticket"))
             if f != ticket]
    assert files.read_masks(os.path.join(dense[0], "mask.npz"))["output/kernel"].min() == 1.0


def test_reinit_output_gives_a_fresh_output_layer_on_the_same_classes(parent, tmp_path):
    root = copy_of(parent, tmp_path / "d")
    source = Experiment.open(root)
    branch = Transfer(source, TransferOptions(modes=("ticket",), reinit_output=True))
    [cell] = branch.parts(Cell(0, 1, "imp"))
    with Workbench(None, root) as bench:
        branch.prepare(cell, bench)  # writes the ticket's starting weights; nothing trains
    [spec] = branch.runs(cell)
    names = files.read_weight_names(spec.init.file)
    for name, value, old in zip(names, files.read_weights(spec.init.file), source.theta_init(0)):
        assert np.array_equal(value, old) != name.startswith("output/kernel"), name
    output = spec.masks["output/kernel"]
    assert output.sum() == source.masks(0, 1, "imp")["output/kernel"].sum()
    assert not np.array_equal(output, source.masks(0, 1, "imp")["output/kernel"]), "drawn at random"


def test_input_shapes_must_fit_unless_the_model_pools_globally(parent, capsys):
    assert run_branch(f"--experiment_dir={parent}", "--branch=transfer", "--dataset=cifar10", "--dry_run") == 2
    assert "--dataset: cifar10 has inputs (32, 32, 3), the parent (28, 28, 1); model mlp cannot take them " \
           "(it is not resolution-agnostic)" in capsys.readouterr().err

    def check(model, source_shape, target):
        config = small_config("/tmp", model=model, hidden_units=(), dataset=target)
        fake_parent = types.SimpleNamespace(config=small_config("/tmp", model=model, hidden_units=(), dataset="cifar10"),
                                            dataset=DatasetInfo("cifar10", source_shape, 10))
        branch_cli._check_dataset(fake_parent, types.SimpleNamespace(config=config, new_classes=True))  # pylint: disable=protected-access

    check("resnet18", (32, 32, 3), "stl10")  # 96x96x3: global average pooling takes any size
    with pytest.raises(UsageError, match="first layer fits only the parent's channels"):
        check("resnet18", (32, 32, 3), "mnist")
    with pytest.raises(UsageError, match="not resolution-agnostic"):
        check("conv2", (32, 32, 3), "stl10")


def test_a_bad_mode_or_comparison_is_one_line(parent, capsys):
    assert run_branch(f"--experiment_dir={parent}", "--branch=transfer", "--modes=ticket,lucky", "--dry_run") == 2
    assert "--modes: expected some of ticket,mask_only,random_ticket, got ticket,lucky" in capsys.readouterr().err
    assert run_branch(f"--experiment_dir={parent}", "--branch=transfer", "--compare_with=/nonexistent", "--dry_run") == 2
    assert "--compare_with: /nonexistent does not exist" in capsys.readouterr().err
    assert run_branch(f"--experiment_dir={parent}", "--branch=transfer", "--dataset=fashion_mnist",
                      f"--compare_with={parent}", "--dry_run") == 2
    assert f"--compare_with: {parent} trains mlp on mnist; this transfer trains mlp on fashion_mnist" in \
        capsys.readouterr().err


def test_an_interrupted_transfer_resumes_to_the_uninterrupted_numbers(parent, tmp_path, monkeypatch):
    args = ("--branch=transfer", "--levels=1", "--modes=random_ticket", "--dataset=fashion_mnist", *QUICK)
    whole, broken = copy_of(parent, tmp_path / "whole"), copy_of(parent, tmp_path / "broken")
    assert run_branch(f"--experiment_dir={whole}", *args) == 0
    with monkeypatch.context() as patch:
        patch.setattr(Transfer, "hooks", lambda self, spec: [StopAt(40)] if spec.name == "imp_random_ticket" else [])
        assert run_branch(f"--experiment_dir={broken}", *args) not in (0, None)  # "interrupted; run ... again"
    folder = run_folder(broken, 1, "imp_random_ticket")
    assert os.path.exists(os.path.join(folder, "checkpoints")) and not os.path.exists(os.path.join(folder, "result.json"))
    assert run_branch(f"--experiment_dir={broken}", *args) == 0
    tables = [Experiment.open(root).branch_table("transfer") for root in (whole, broken)]
    assert [{k: v for k, v in row.items() if k != "train_seconds"} for row in tables[0]] == \
           [{k: v for k, v in row.items() if k != "train_seconds"} for row in tables[1]]
