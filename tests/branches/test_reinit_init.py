"""The reinit branch's --init: what the survivors start from (Zhou et al. 2019)."""

import os

import numpy as np
import pytest

from branch_helpers import copy_of, deterministic_parent, run_branch
from tf_lottery.experiment import files
from tf_lottery.experiment.reader import Experiment
from tf_lottery.pruning import survivors

INITS = ("reshuffle", "signed_reinit", "signed_constant", "constant")


@pytest.fixture(scope="module")
def branched(tmp_path_factory):
    """The deterministic parent with every --init trained at level 1: (root, {init: the run's initial weights})."""
    with deterministic_parent(tmp_path_factory.mktemp("parent")) as (root, _):
        for init in ("fresh",) + INITS:
            assert run_branch(f"--experiment_dir={root}", "--branch=reinit", f"--init={init}", "--noprogress") == 0
        experiment = Experiment.open(root)
        starts = {}
        for row in experiment.branch_table("reinit"):
            folder = experiment.paths.branch(0, 1, "reinit", row["branch_hash"]).run("imp")
            spec = files.read_json(folder.spec)
            starts[row["init"]] = files.read_weights(os.path.join(root, spec["init"]["file"]))
        yield root, starts


def _kernels(experiment):
    """(index of the kernels in a weights file, the level-1 mask of each)."""
    masks = experiment.masks(0, 1, "imp")
    names = files.read_weight_names(experiment.paths.theta_init(0))
    return {names.index(path.replace("/kernel", "/kernel:0")): mask for path, mask in masks.items()}


def test_every_init_has_its_row_and_fresh_keeps_its_folder(branched):
    root, starts = branched
    experiment = Experiment.open(root)
    rows = experiment.branch_table("reinit")
    assert sorted(r["init"] for r in rows) == sorted(("fresh",) + INITS)
    assert all(0 < r["final_test_accuracy"] <= 1 and r["density"] < 1 for r in rows)
    fresh = next(r for r in rows if r["init"] == "fresh")
    # The default keeps the hash of the branch before --init existed (its folders stay valid).
    from tf_lottery.branches.reinit import Reinit  # pylint: disable=import-outside-toplevel
    assert fresh["branch_hash"] == Reinit(experiment).hash
    assert len({r["branch_hash"] for r in rows}) == len(rows)


def test_reshuffle_keeps_each_layers_multiset_of_kept_values(branched):
    root, starts = branched
    experiment = Experiment.open(root)
    theta = experiment.theta_init(0)
    for index, mask in _kernels(experiment).items():
        kept = mask > 0
        new, old = starts["reshuffle"][index], theta[index]
        np.testing.assert_array_equal(np.sort(new[kept]), np.sort(old[kept]))
        assert not np.array_equal(new[kept], old[kept])
    biases = [i for i in range(len(theta)) if i not in _kernels(experiment)]
    for i in biases:  # what the mask does not cover keeps the run's initial values
        np.testing.assert_array_equal(starts["reshuffle"][i], theta[i])


def test_signed_constant_is_alpha_times_the_initial_sign(branched):
    root, starts = branched
    experiment = Experiment.open(root)
    theta = experiment.theta_init(0)
    for index, mask in _kernels(experiment).items():
        alpha = np.std(theta[index])
        new = starts["signed_constant"][index]
        np.testing.assert_allclose(np.abs(new), alpha, rtol=1e-6)
        np.testing.assert_array_equal(np.sign(new), np.where(theta[index] < 0, -1, 1))
        constant = starts["constant"][index]
        np.testing.assert_allclose(np.abs(constant), alpha, rtol=1e-6)
        agree = np.mean(np.sign(constant) == np.sign(theta[index]))
        assert 0.4 < agree < 0.6  # random signs


def test_signed_reinit_has_fresh_magnitudes_and_the_initial_signs(branched):
    root, starts = branched
    experiment = Experiment.open(root)
    theta = experiment.theta_init(0)
    for index in _kernels(experiment):
        new = starts["signed_reinit"][index]
        np.testing.assert_array_equal(np.sign(new), np.where(theta[index] < 0, -1, 1))
        np.testing.assert_allclose(np.abs(new), np.abs(starts["fresh"][index]), rtol=1e-6)
        assert not np.allclose(np.abs(new), np.abs(theta[index]))


def test_unit_transformations():
    rng = np.random.default_rng(0)
    initial = {"w": np.array([0.5, -0.2, 0.0, 0.3], np.float32)}
    masks = {"w": np.array([1, 1, 0, 1], np.float32)}
    shuffled = survivors.reshuffle(initial, masks, rng)["w"]
    assert shuffled[2] == 0.0 and sorted(shuffled[[0, 1, 3]].tolist()) == pytest.approx([-0.2, 0.3, 0.5])
    assert survivors.signed_constant(initial, {"w": 0.1})["w"].tolist() == pytest.approx([0.1, -0.1, 0.1, 0.1])


def test_a_bad_init_is_one_line(branched, tmp_path, capsys):
    root, _ = branched
    copy = copy_of(root, tmp_path / "copy")
    assert run_branch(f"--experiment_dir={copy}", "--branch=reinit", "--init=zeros", "--noprogress") != 0
    err = capsys.readouterr().err.strip()
    assert "--init" in err and "zeros" in err and len(err.splitlines()) == 1
