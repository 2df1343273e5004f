"""The gmp branch: tfmot's gradual magnitude pruning reaches the parent's per-layer counts exactly,
starts where --start says, resumes an interrupted run to the same numbers, and refuses bad options."""

import csv
import dataclasses
import os

import numpy as np
import pytest

from branch_helpers import deterministic_parent, run_branch

from stop_hook import StopAt
from tf_lottery import branches
from tf_lottery.branches.base import Cell
from tf_lottery.branches.gmp import GmpOptions
from tf_lottery.experiment import files
from tf_lottery.experiment.reader import Experiment
from tf_lottery.training import run as run_lib
from tf_lottery.training.workbench import Workbench

ARGS = ("--branch=gmp", "--levels=1", "--noprogress")
FREQUENCY = "--gmp_frequency=10"  # 60 iterations: mask updates at 10, 20, 30, 40


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished deterministic experiment (levels 0-1) and the gmp branch run on it with both starts."""
    with deterministic_parent(tmp_path_factory.mktemp("gmp")) as (root, _):
        for start in ("trained", "init"):
            assert run_branch(f"--experiment_dir={root}", *ARGS, FREQUENCY, f"--start={start}") == 0
        yield root


def gmp_run(root, start):
    branch = branches.get("gmp")(Experiment.open(root), GmpOptions(start=start, gmp_frequency=10))
    return branch, branch.folder(Cell(0, 1, "imp")).run("imp")


def metric(path, split, name):
    with open(path) as f:
        return [(int(r["iteration"]), float(r["value"])) for r in csv.DictReader(f)
                if r["split"] == split and r["metric"] == name]


@pytest.mark.parametrize("start", ["trained", "init"])
def test_gmp_prunes_each_layer_to_exactly_the_parents_count(parent, start):
    experiment = Experiment.open(parent)
    target = experiment.masks(0, 1, "imp")
    _, run = gmp_run(parent, start)
    result = files.read_json(run.result)
    final = dict(zip(files.read_weight_names(run.final_weights), files.read_weights(run.final_weights)))
    for path, mask in target.items():
        kept = int(np.count_nonzero(final[f"{path}:0"]))
        assert kept == int(np.count_nonzero(mask)), path
        assert result["weight_densities"][path] == kept / mask.size, path
    assert any(not np.all(m) for m in target.values()), "the parent's level 1 prunes something"
    assert result["density"] == result["target_density"] == pytest.approx(experiment.result(0, 1, "imp")["density"])
    densities = [d for _, d in metric(run.metrics, "mask", "density")]
    assert densities[0] == 1.0 and densities[-1] == result["density"]
    assert all(a >= b for a, b in zip(densities, densities[1:])) and len(set(densities)) > 3, densities  # gradual
    [row] = [r for r in experiment.branch_table("gmp") if r["start"] == start]
    assert row["density"] == result["density"] and row["pruning_end"] == 40
    spent = 60 + (experiment.iterations_spent(0, 0, "imp") if start == "trained" else 0)
    assert row["iterations_spent"] == spent and row["iterations_trained"] == 60


def test_start_trained_is_level_0s_final_weights_and_init_is_theta_0(parent):
    level0 = Experiment.open(parent).run(0, 0, "imp")
    final_loss = metric(level0.metrics, "validation", "loss")[-1]
    first_loss = metric(level0.metrics, "validation", "loss")[0]
    for start, expected, label in (("trained", final_loss, "level_0_final_weights"), ("init", first_loss, "theta_0")):
        _, run = gmp_run(parent, start)
        assert metric(run.metrics, "validation", "loss")[0] == (0, expected[1]), start
        assert files.read_json(run.spec)["init"]["label"] == label
    trained = files.read_json(gmp_run(parent, "trained")[1].spec)["config"]
    assert trained["learning_rate"] == 3e-3 and trained["iterations"] == 60


def test_an_interrupted_gmp_run_resumes_to_the_same_numbers(parent, tmp_path):
    branch, whole = gmp_run(parent, "trained")
    [spec] = branch.runs(Cell(0, 1, "imp"))
    spec = dataclasses.replace(spec, directory=str(tmp_path / "resumed"))
    with Workbench(None, parent) as bench:
        with pytest.raises(KeyboardInterrupt):
            run_lib.train(spec, bench, branch.hooks(spec) + [StopAt(30)])
        assert os.path.isdir(spec.paths.checkpoints) and not os.path.exists(spec.paths.result)
        result = run_lib.train(spec, bench, branch.hooks(spec))
        # The same trainer (cached by its wrap) trains the next run from a clean tfmot state.
        again = dataclasses.replace(spec, directory=str(tmp_path / "again"))
        run_lib.train(again, bench, branch.hooks(again))
    expected = files.read_json(whole.result)
    assert {k: v for k, v in result.items() if k != "train_seconds"} == \
           {k: v for k, v in expected.items() if k != "train_seconds"}
    for copy in (spec, again):
        for a, b in zip(files.read_weights(copy.paths.final_weights), files.read_weights(whole.final_weights)):
            np.testing.assert_array_equal(a, b)
        with open(copy.paths.metrics) as f, open(whole.metrics) as g:
            assert f.read() == g.read()


@pytest.mark.parametrize("args, message", [
    (("--gmp_frequency=0",), "--gmp_frequency: must be >= 1"),
    ((FREQUENCY, "--gmp_end=25"), "--gmp_end: must be --gmp_begin plus a multiple of --gmp_frequency=10"),
    ((FREQUENCY, "--gmp_end=70"), "--gmp_end: 70 is past the run's end (60 iterations)"),
    (("--gmp_frequency=100",), "--gmp_frequency: 100 leaves no mask update"),
    ((FREQUENCY, "--gmp_iterations=-1"), "--gmp_iterations: must be >= 0"),
    ((FREQUENCY, "--start=midway"), "--start"),
])
def test_a_bad_option_is_one_line_and_exit_2(parent, capsys, args, message):
    code = run_branch(f"--experiment_dir={parent}", *ARGS, *args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("tf_lottery.branch: error: ") and err.count("\n") == 1, err
    assert message in err, err
