"""The combine branch: an ensemble's logits are the mean of its members', a weight average keeps the mask
and reuses the stability branch's copies, unions and intersections retrain exactly the combined mask,
a second call trains nothing, and bad input is one line that writes nothing."""

import glob
import os
import shutil

import numpy as np
import pytest

from branch_helpers import copy_of, digest, run_branch
from conftest import small_config
from tf_lottery.branches.base import Cell
from tf_lottery.branches.combine import Combine, CombineOptions
from tf_lottery.data import pipeline
from tf_lottery.experiment import files
from tf_lottery.experiment.reader import Experiment
from tf_lottery.lottery import imp
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training import checkpoints, combination, interpolation
from tf_lottery.training.workbench import Workbench
from tf_lottery.utils import write_json

ONE_CELL = ("--branch=combine", "--levels=1", "--replicates=0", "--noprogress")


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    """A finished parent (3 replicates, levels 0-1) and its partner: the same flags but --data_seed."""
    folder = tmp_path_factory.mktemp("combine")
    roots = {}
    for name, extra in (("parent", {}), ("partner", {"data_seed": 1000})):
        config = small_config(folder, levels=1, replicates=3, experiment_name=name, **extra)
        imp.run_experiment(config)
        roots[name] = os.path.join(config.run.output_dir, name)
    return roots


def branch_folder(root, replicate=0, level=1):
    [folder] = glob.glob(os.path.join(root, f"replicate_{replicate}", f"level_{level:02d}", "branch_combine_*"))
    return folder


def test_data_seed_is_the_only_difference(experiments):
    parent, partner = (Experiment.open(experiments[n]) for n in ("parent", "partner"))
    assert parent.data_seed_of(0, 0, "imp") != partner.data_seed_of(0, 0, "imp")
    assert all(np.array_equal(a, b) for a, b in zip(parent.theta_init(1), partner.theta_init(1)))


def hand_logits(model, dataset, weights, masks):
    """The model's logits with `weights`, batch by batch, without the branch's code."""
    checkpoints.assign_weights(model, weights)
    masks_lib.apply_masks(model, masks)
    return np.concatenate([model(images, training=False).numpy() for images, _ in dataset])


def test_an_ensemble_is_the_mean_of_its_members_logits(experiments, tmp_path):
    root = copy_of(experiments["parent"], tmp_path / "ensemble")
    assert run_branch(f"--experiment_dir={root}", *ONE_CELL, "--how=ensemble", "--members=2,3") == 0
    experiment = Experiment.open(root)
    table = experiment.branch_table("combine")
    assert [(r["run"], r["size"]) for r in table] == [("imp_ensemble_n2", 2), ("imp_ensemble_n3", 3)]
    assert not glob.glob(os.path.join(branch_folder(root), "*", "result.json")), "an ensemble trains nothing"
    with Workbench(None, root) as bench:
        model = bench.trainer(experiment.config).model
        splits = bench.splits(experiment.config)
        dataset = pipeline.evaluation_dataset(splits.test_images, splits.test_labels, splits.info, 2500)
        labels = splits.test_labels.astype(np.int64)
        logits = [hand_logits(model, dataset, experiment.final_weights(r, 1, "imp"), experiment.masks(r, 1, "imp"))
                  for r in range(3)]
    for row in table:
        members = list(range(int(row["size"])))
        ensemble = np.mean(np.stack([logits[r] for r in members]), axis=0)
        assert row["test_accuracy"] == np.mean(np.argmax(ensemble, -1) == labels)
        expected_loss = -np.mean(np.log(np.exp(ensemble) / np.exp(ensemble).sum(-1, keepdims=True))[
            np.arange(len(labels)), labels])
        assert row["test_loss"] == pytest.approx(expected_loss, rel=1e-5)
        results = [experiment.result(r, 1, "imp") for r in members]
        accuracies = [float(np.mean(np.argmax(logits[r], -1) == labels)) for r in members]
        assert accuracies == pytest.approx([r["final_test_accuracy"] for r in results], abs=1e-6)
        assert row["member_accuracy_mean"] == pytest.approx(np.mean(accuracies))
        assert row["member_accuracy_min"] == pytest.approx(min(accuracies))
        assert row["budget_density"] == pytest.approx(sum(r["density"] for r in results))
        assert row["density"] == pytest.approx(results[0]["density"])
        # two or three tickets at about half the weights each: the dense network is the nearest single ticket
        assert (row["nearest_level"], row["nearest_density"]) == (0, 1.0)
        assert row["nearest_test_accuracy"] == pytest.approx(experiment.result(0, 0, "imp")["final_test_accuracy"])
        assert row["dense_test_accuracy"] == row["nearest_test_accuracy"]
        assert row["iterations_spent"] == sum(experiment.iterations_spent(r, 1, "imp") for r in members) == 120 * len(members)
        assert row["runs"] == ";".join(f"replicate_{r}/level_01/imp" for r in members)


def test_ensemble_members_are_cyclic_over_the_replicates_that_finished_the_level(experiments, tmp_path, capsys):
    root = copy_of(experiments["parent"], tmp_path / "cyclic")
    branch = Combine(Experiment.open(root), CombineOptions(how=("ensemble",), members=(2, 3)))
    assert branch.members(Cell(2, 1, "imp"), 2) == [2, 0]
    assert branch.members(Cell(1, 1, "imp"), 3) == [1, 2, 0]
    shutil.rmtree(os.path.join(root, "replicate_1", "level_01"))
    branch = Combine(Experiment.open(root), CombineOptions(how=("ensemble",), members=(2,)))
    assert branch.members(Cell(0, 1, "imp"), 2) == [0, 2] and branch.members(Cell(2, 1, "imp"), 2) == [2, 0]
    before = digest(root)
    assert run_branch(f"--experiment_dir={root}", *ONE_CELL, "--how=ensemble", "--members=3") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--members: an ensemble of 3 at level 1 needs 3 replicates" in err, err
    assert digest(root) == before


def test_a_weight_average_reuses_the_stability_copies_and_keeps_the_mask(experiments, tmp_path, capsys):
    root = copy_of(experiments["parent"], tmp_path / "average")
    assert run_branch(f"--experiment_dir={root}", "--branch=stability", "--levels=1", "--replicates=0",
                      "--interpolation_points=2", "--train_eval_examples=0", "--noprogress") == 0
    [stability] = glob.glob(os.path.join(root, "replicate_0", "level_01", "branch_stability_*"))
    trained = {c: os.path.getmtime(os.path.join(stability, f"imp_data_k0_copy{c}", "result.json")) for c in (0, 1)}
    args = (f"--experiment_dir={root}", *ONE_CELL, "--how=average", "--copies=3")
    assert run_branch(*args) == 0
    folder = branch_folder(root)
    assert sorted(os.listdir(folder)) == ["average_imp_c3.npz", "branch.json", "imp_average_copy2", "rows_imp_average_c3.json"]
    assert {c: os.path.getmtime(os.path.join(stability, f"imp_data_k0_copy{c}", "result.json")) for c in (0, 1)} == trained
    experiment = Experiment.open(root)
    [row] = experiment.branch_table("combine")
    copies = [os.path.join(stability, "imp_data_k0_copy0"), os.path.join(stability, "imp_data_k0_copy1"),
              os.path.join(folder, "imp_average_copy2")]
    assert row["runs"] == ";".join(os.path.relpath(c, root) for c in copies)
    record = files.read_json(os.path.join(copies[2], "run.json"))
    branch = Combine(experiment, CombineOptions(how=("average",), copies=3))
    assert record["data_seed"] == branch.stability.copy_data_seed(Cell(0, 1, "imp"), 2)
    assert (record["init"]["file"], record["start_iteration"]) == ("replicate_0/theta_0.npz", 0)
    weights = [files.read_weights(os.path.join(c, "final_weights.npz")) for c in copies]
    soup = files.read_weights(os.path.join(folder, "average_imp_c3.npz"))
    masks = experiment.masks(0, 1, "imp")
    with Workbench(None, root) as bench:
        model = bench.trainer(experiment.config).model
        positions = dict(interpolation.prunable_positions(model))
        splits = bench.splits(experiment.config)
        dataset = pipeline.evaluation_dataset(splits.test_images, splits.test_labels, splits.info, 2500)
        averaged = hand_logits(model, dataset, soup, masks)
    for i, value in enumerate(soup):
        mean = ((weights[0][i].astype(np.float64) + weights[1][i] + weights[2][i]) / 3).astype(np.float32)
        np.testing.assert_allclose(value, mean, rtol=1e-6, atol=1e-7)
    for path, i in positions.items():
        assert np.all(soup[i][masks[path] == 0] == 0) and np.all(soup[i][masks[path] == 1] != 0), path
    assert row["test_accuracy"] == np.mean(np.argmax(averaged, -1) == splits.test_labels)
    results = [files.read_json(os.path.join(c, "result.json")) for c in copies]
    assert row["member_accuracy_max"] == pytest.approx(max(r["final_test_accuracy"] for r in results), abs=1e-6)
    assert 0 < row["ensemble_test_accuracy"] <= 1 and row["nearest_level"] == 1
    assert row["density"] == row["budget_density"] == pytest.approx(experiment.result(0, 1, "imp")["density"])
    assert row["iterations_spent"] == 60 + 3 * 60, "the mask's level 0 and three copies"
    before = digest(root)
    capsys.readouterr()
    assert run_branch(*args) == 0
    assert digest(root) == before, "a second identical call trained or rewrote something"


def test_union_and_intersection_retrain_exactly_the_combined_mask(experiments, tmp_path, capsys):
    root = copy_of(experiments["parent"], tmp_path / "masks")
    args = ("--branch=combine", "--levels=0-1", "--replicates=0", "--noprogress", "--how=union,intersection")
    assert run_branch(f"--experiment_dir={root}", *args, f"--partner={experiments['partner']}") == 0
    experiment, partner = Experiment.open(root), Experiment.open(experiments["partner"])
    table = experiment.branch_table("combine")
    digest_ = partner.config.experiment_hash()
    assert [(r["level"], r["run"]) for r in table] == [(1, f"imp_intersection_{digest_}"), (1, f"imp_union_{digest_}")]
    mine, theirs = experiment.masks(0, 1, "imp"), partner.masks(0, 1, "imp")
    assert any(not np.array_equal(mine[p], theirs[p]) for p in mine), "another data order, another mask"
    for row in table:
        operation = np.logical_or if row["how"] == "union" else np.logical_and
        run = os.path.join(branch_folder(root), row["run"])
        trained = files.read_masks(os.path.join(run, "mask.npz"))
        for path in mine:
            np.testing.assert_array_equal(trained[path], operation(mine[path], theirs[path]).astype(np.float32))
        result = files.read_json(os.path.join(run, "result.json"))
        assert row["density"] == pytest.approx(masks_lib.density(trained)) == pytest.approx(result["density"])
        assert row["test_accuracy"] == pytest.approx(result["final_test_accuracy"])
        both = sum(np.sum(np.logical_and(mine[p], theirs[p])) for p in mine)
        assert row["overlap"] == pytest.approx(both / sum(np.sum(np.logical_or(mine[p], theirs[p])) for p in mine))
        assert row["overlap"] == pytest.approx(combination.overlap(mine, theirs))
        assert row["member_accuracies"] == ",".join(
            f"{e.result(0, 1, 'imp')['final_test_accuracy']:.6g}" for e in (experiment, partner))
        assert (row["partner"], row["partner_hash"]) == (experiments["partner"], digest_)
        record = files.read_json(os.path.join(run, "run.json"))
        assert (record["init"]["file"], record["start_iteration"]) == ("replicate_0/theta_0.npz", 0)
        assert record["data_seed"] == experiment.data_seed_of(0, 1, "imp")
        assert row["iterations_spent"] == 60 + 60 + 60, "two masks (each the dense run's) and the retraining"
    union = next(r for r in table if r["how"] == "union")
    assert union["nearest_level"] == (0 if union["density"] > 0.5 ** 0.5 else 1)
    before = digest(root)
    capsys.readouterr()
    assert run_branch(f"--experiment_dir={root}", *args, f"--partner={experiments['partner']}") == 0
    assert digest(root) == before, "a second identical call trained or rewrote something"
    moved = copy_of(experiments["partner"], tmp_path / "moved_partner")
    assert run_branch(f"--experiment_dir={root}", *args, f"--partner={moved}") == 0
    assert digest(root) == before, "a partner moved on disk is the same partner"


@pytest.fixture(scope="module")
def bad_partners(experiments, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    theta = copy_of(experiments["partner"], folder / "theta")
    path = os.path.join(theta, "replicate_0", "theta_0.npz")
    files.write_weights(path, files.read_weight_names(path), [w + 1 for w in files.read_weights(path)])
    settings = copy_of(experiments["partner"], folder / "settings")
    stored = files.read_json(os.path.join(settings, "config.json"))
    stored["config"]["learning_rate"] = 0.1
    write_json(os.path.join(settings, "config.json"), stored)
    lacking = copy_of(experiments["partner"], folder / "lacking")
    shutil.rmtree(os.path.join(lacking, "replicate_2", "level_01"))  # the last cell: refused before the first is written
    return {"theta": theta, "settings": settings, "lacking": lacking, "missing": str(folder / "nowhere")}


@pytest.mark.parametrize("args, message", [
    (("--how=union",), "--partner: union and intersection need a partner experiment"),
    (("--how=intersection", "--partner=theta"), "--partner: θ0 of replicate 0 in"),
    (("--how=union", "--partner=settings"), "differs from the parent in --learning_rate"),
    (("--how=union", "--partner=lacking", "--replicates=0-2"), "--partner: replicate 2 level 1 imp of"),
    (("--how=union", "--partner=missing"), "nowhere does not exist"),
    (("--how=ensemble", "--members=4"), "--members: an ensemble of 4 needs as many replicates"),
    (("--members=1",), "--members: ensemble sizes must be >= 2"),
    (("--how=average", "--copies=1"), "--copies: must be >= 2"),
    (("--how=soup",), "--how: expected some of ensemble,average,union,intersection"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(experiments, bad_partners, capsys, args, message):
    root = experiments["parent"]
    args = [a.replace(a[10:], bad_partners[a[10:]]) if a.startswith("--partner=") else a for a in args]
    before = digest(root)
    code = run_branch(f"--experiment_dir={root}", *ONE_CELL, *args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("tf_lottery.branch: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert digest(root) == before
