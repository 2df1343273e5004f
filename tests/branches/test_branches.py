"""Branches: a toy branch trains, resumes after kill -9 and reruns for free; the control
branches give the numbers --controls gives; bad input is one line and writes nothing."""

import glob
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import toy_branch  # noqa: F401  (registers the toy branch)
from branch_helpers import copy_of, deterministic_parent, digest, run_branch
from conftest import REPO, kill_9_once_written
from tf_lottery import branches
from tf_lottery.branches import runner
from tf_lottery.branches.base import Branch, Cell
from tf_lottery.errors import UsageError
from tf_lottery.experiment import files, results
from tf_lottery.experiment.reader import Experiment
from tf_lottery.registry import UnknownNameError
from tf_lottery.utils import write_json

TOY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy_branch.py")


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished deterministic experiment (levels 0-1) with both controls run by --controls.

    Op determinism is on for this module, as the commands turn it on for --deterministic.
    """
    with deterministic_parent(tmp_path_factory.mktemp("parent"), controls=("reinit", "random_prune")) as parent_:
        yield parent_



def test_the_reader_returns_exactly_the_runners_rows(parent):
    root, rows = parent
    experiment = Experiment.open(root)
    assert experiment.rows() == rows
    table = experiment.table()
    assert [(r["replicate"], r["level"], r["variant"]) for r in table] == [(r["replicate"], r["level"], r["variant"]) for r in rows]
    for row, result in zip(table, rows):
        for column in results.RESULT_COLUMNS:
            if column in result:
                assert row[column] == pytest.approx(result[column]), column
            else:  # early_bird_iteration: only runs under --early_bird have it
                assert math.isnan(row[column]), column


@pytest.mark.parametrize("control", ["reinit", "random_prune"])
def test_a_control_branch_equals_the_same_control_run_by_the_imp_loop(parent, control, capsys):
    root, rows = parent
    assert run_branch(f"--experiment_dir={root}", f"--branch={control}", "--noprogress", "--deterministic") == 0
    [row] = Experiment.open(root).branch_table(control)
    loop = next(r for r in rows if r["level"] == 1 and r["variant"] == control)
    assert (row["branch"], row["replicate"], row["level"], row["variant"]) == (control, 0, 1, "imp")
    for column in ("density", "final_test_accuracy", "early_stop_iteration", "early_stop_test_accuracy", "best_val_accuracy"):
        assert row[column] == loop[column], column
    branch_run = glob.glob(os.path.join(root, "replicate_0", "level_01", f"branch_{control}_*", "imp"))[0]
    for name in ("final_weights.npz", "mask.npz"):
        a = np.load(os.path.join(branch_run, name))
        b = np.load(os.path.join(root, "replicate_0", "level_01", control, name))
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_every_run_stores_the_weights_it_started_from(parent):
    root, _ = parent
    experiment = Experiment.open(root)
    values, names, label = experiment.initial_weights(0, 1, "reinit")
    assert label == "fresh" and names[0].startswith("fc1/kernel")
    assert not np.array_equal(values[0], experiment.theta_init(0)[0])
    assert experiment.initial_weights(0, 1, "random_prune")[2] == "theta_0"
    stored = files.read_json(experiment.run(0, 1, "reinit").spec)
    assert stored["init"]["file"] == "replicate_0/level_01/reinit/initial_weights.npz"


def test_toy_branch_trains_its_runs_calls_its_hooks_and_writes_its_table(parent, capsys):
    root, _ = parent
    args = [f"--experiment_dir={root}", "--branch=toy", "--levels=0-1", "--noprogress", "--iterations=28",
            "--eval_every=14"]
    assert run_branch(*args) == 0
    experiment = Experiment.open(root)
    table = experiment.branch_table("toy")
    assert [(r["level"], r["run"]) for r in table] == [(0, "imp_0"), (0, "imp_1"), (1, "imp_0"), (1, "imp_1")]
    assert set(results.BRANCH_COLUMNS) | {"copies", "distance"} <= set(table[0])
    assert all(r["copies"] == 2 and r["distance"] > 0 for r in table), "two data orders give two networks"
    folder = glob.glob(os.path.join(root, "replicate_0", "level_01", "branch_toy_*"))[0]
    record = files.read_json(os.path.join(folder, "branch.json"))
    assert record["overrides"] == {"eval_every": 14, "iterations": 28}
    assert record["parent"]["fingerprint"] == experiment.config.fingerprint()
    result = files.read_json(os.path.join(folder, "imp_0", "result.json"))
    assert result["evaluated_at"] == [0, 14, 28] and result["every_7"] == [7, 14, 21, 28]
    assert files.read_json(os.path.join(folder, "imp_0", "run.json"))["config"]["iterations"] == 28
    before = digest(root)
    capsys.readouterr()
    assert run_branch(*args) == 0, "a second identical call"
    assert digest(root) == before, "a second identical call trained or rewrote something"
    assert run_branch(*[a for a in args if a != "--levels=0-1"], "--levels=1", "--copies=3") == 0
    hashes = {r["branch_hash"] for r in Experiment.open(root).branch_table("toy")}
    assert len(hashes) == 2, "other options are another branch folder, in the same table"


def test_the_table_grows_after_every_cell_so_a_long_branch_can_be_watched(parent, tmp_path, monkeypatch):
    root = copy_of(parent[0], tmp_path / "watched")
    for folder in glob.glob(os.path.join(root, "replicate_0", "level_*", "branch_*")) + [os.path.join(root, "branches")]:
        subprocess.run(["rm", "-rf", folder], check=True)
    seen = []
    original = runner.run_cell

    def watching(branch, cell, bench):
        table = os.path.join(root, "branches", "toy.csv")
        seen.append(len(Experiment.open(root).branch_table("toy")) if os.path.exists(table) else 0)
        return original(branch, cell, bench)

    monkeypatch.setattr(runner, "run_cell", watching)
    assert run_branch(f"--experiment_dir={root}", "--branch=toy", "--levels=0-1", "--noprogress", "--iterations=7",
                      "--eval_every=7") == 0
    assert seen == [0, 2], "level 1 starts with level 0's two rows already in the table"


def test_a_branch_folder_survives_a_new_setting_at_its_default_but_not_another_parent(parent, tmp_path):
    from tf_lottery.branches.runner import check_record  # pylint: disable=import-outside-toplevel

    root = copy_of(parent[0], tmp_path / "record")
    branch = branches.get("toy")(Experiment.open(root))
    cell = Cell(0, 1, "imp")
    path = str(tmp_path / "branch.json")
    record = branch.record(cell)
    # A setting added later changes every fingerprint, not the hash of the non-default settings.
    write_json(path, {**record, "parent": {**record["parent"], "fingerprint": "0ld0ld00"}})
    check_record(branch, cell, path)
    write_json(path, {**record, "parent": {**record["parent"], "experiment_hash": "0ther000"}})
    with pytest.raises(UsageError, match="differs in parent experiment"):
        check_record(branch, cell, path)
    older = {k: v for k, v in record["parent"].items() if k != "experiment_hash"}  # before records held the hash
    write_json(path, {**record, "parent": older})
    check_record(branch, cell, path)


TOY_ARGS = ("--branch=toy", "--levels=1", "--noprogress", "--iterations=100", "--eval_every=50",
            "--checkpoint_every=25", "--deterministic")


def test_toy_branch_survives_kill_9_and_resumes_to_the_uninterrupted_numbers(parent, tmp_path, capsys):
    root, _ = parent
    copies = {}
    for name in ("whole", "killed"):
        copies[name] = str(tmp_path / name)
        subprocess.run(["cp", "-r", root, copies[name]], check=True)
        for folder in glob.glob(os.path.join(copies[name], "replicate_0", "level_*", "branch_*")):
            subprocess.run(["rm", "-rf", folder], check=True)
    assert run_branch(f"--experiment_dir={copies['whole']}", *TOY_ARGS) == 0  # uninterrupted, in this process
    command = [sys.executable, TOY, f"--experiment_dir={copies['killed']}", *TOY_ARGS]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    pattern = os.path.join(copies["killed"], "replicate_0", "level_01", "branch_toy_*", "imp_1", "checkpoints", "checkpoint")
    # The default timeout is generous: on a loaded CI machine importing TensorFlow alone can take minutes.
    written = kill_9_once_written(command, pattern, env=env)
    assert written, "never reached the second run (finished or timed out before it)"
    assert not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(written[0])), "result.json"))
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    tables = [Experiment.open(copies[n]).branch_table("toy") for n in ("whole", "killed")]
    assert [{k: v for k, v in r.items() if k != "train_seconds"} for r in tables[0]] == \
           [{k: v for k, v in r.items() if k != "train_seconds"} for r in tables[1]]


@pytest.mark.parametrize("args, message", [
    (("--branch=nope",), "unknown branch 'nope'; known branch names: combine, franken, gmp, pai, prune_during_training, random_prune, reinit, retrain_ticket, stability, supermask, toy, transfer"),
    (("--branch=reinit", "--levels=0"), "level 0 is the dense network"),
    (("--branch=reinit", "--levels=7"), "replicate 0 level 7 imp of"),
    (("--branch=reinit", "--levels=x"), "--levels: expected numbers and ranges"),
    (("--branch=reinit", "--replicates=3"), "has no level where imp finished in replicate 3"),
    (("--branch=reinit", "--replicates=3", "--levels=1"), "replicate 3 level 1 imp"),
    (("--branch=reinit", "--variants=bogus"), "has no level where bogus finished in replicate 0"),
    (("--branch=reinit", "--variants=bogus", "--levels=1"), "level 1 bogus"),
    (("--branch=reinit", "--model=conv2"), "--model: the parent's masks fix the architecture"),
    (("--branch=reinit", "--prune_rate=0.3"), "--prune_rate: branch reinit does not prune"),
    (("--branch=reinit", "--copies=3"), "--copies: not an option of branch reinit"),
    (("--branch=toy", "--copies=0"), "--copies: must be >= 1"),
    (("--branch=reinit", "--iterations=99999999999999999999"), "int64"),
    (("--branch=reinit", "--learning_rate=-1"), "--learning_rate: must be > 0"),
    (("--branch=reinit", "--no_such_flag=1"), "no_such_flag"),
    (("--branch=reinit", "stray"), "unexpected arguments"),
    (("--branch=reinit", "--experiment_dir=/nonexistent"), "does not exist"),
    ((), "--branch is required"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(parent, capsys, args, message):
    root, _ = parent
    before = digest(root)
    code = run_branch(f"--experiment_dir={root}", *args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("tf_lottery.branch: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert digest(root) == before


def test_a_corrupted_parent_mask_is_named_with_exit_1(parent, tmp_path, capsys):
    root, _ = parent
    copy = str(tmp_path / "copy")
    subprocess.run(["cp", "-r", root, copy], check=True)
    for folder in glob.glob(os.path.join(copy, "replicate_0", "level_*", "branch_*")):
        subprocess.run(["rm", "-rf", folder], check=True)
    mask = os.path.join(copy, "replicate_0", "level_01", "imp", "mask.npz")
    with open(mask, "r+b") as f:
        f.truncate(40)
    code = run_branch(f"--experiment_dir={copy}", "--branch=reinit", "--noprogress")
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert f"{mask} is truncated or corrupted" in err and "delete" in err


def test_traceback_flag_prints_the_trace_as_well(parent, capsys):
    root, _ = parent
    assert run_branch(f"--experiment_dir={root}", "--branch=reinit", "--levels=7", "--traceback") == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith("tf_lottery.branch: error:")


def test_registry_refuses_twins_and_options_that_shadow_flags():
    with pytest.raises(UnknownNameError, match="known branch names"):
        branches.get("nope")

    class Again(Branch):
        name = "toy"

    with pytest.raises(ValueError, match="registered twice"):
        branches.register(Again)

    import dataclasses  # pylint: disable=import-outside-toplevel

    from tf_lottery.config import option  # pylint: disable=import-outside-toplevel

    @dataclasses.dataclass(frozen=True)
    class Shadow:
        iterations: int = option(1, "clashes with --iterations")

    class Shadowing(Branch):
        name = "shadowing"
        Options = Shadow

    with pytest.raises(ValueError, match="--iterations would shadow"):
        branches.register(Shadowing)


def test_dry_run_lists_the_runs_and_writes_nothing(parent, capsys):
    root, _ = parent
    before = digest(root)
    assert run_branch(f"--experiment_dir={root}", "--branch=toy", "--levels=1", "--dry_run") == 0
    out = capsys.readouterr().out
    assert "replicate 0 level 1 imp: imp_0, imp_1" in out
    assert digest(root) == before


def test_a_reinit_ticket_exports_from_the_weights_it_started_from(parent, tmp_path):
    from tf_lottery import export, ticket as ticket_lib  # pylint: disable=import-outside-toplevel

    root, _ = parent
    summary = export.export(root, level=1, variant="reinit", formats=("ticket",), output=str(tmp_path))
    assert summary["formats"]["ticket"]["initial_weights"] == "fresh"
    ticket = ticket_lib.read_ticket(summary["formats"]["ticket"]["path"])
    run = os.path.join(root, "replicate_0", "level_01", "reinit")
    fresh, mask = files.read_weights(os.path.join(run, "initial_weights.npz")), files.read_masks(os.path.join(run, "mask.npz"))
    np.testing.assert_array_equal(ticket.weights[0], fresh[0] * mask["fc1/kernel"])


def test_default_cells_are_where_every_chosen_variant_finished(parent, capsys):
    root, _ = parent
    assert run_branch(f"--experiment_dir={root}", "--branch=toy", "--variants=imp,random_prune", "--dry_run") == 0
    out = capsys.readouterr().out
    assert "level 1 random_prune: random_prune_0, random_prune_1" in out
    assert "level 0 imp: imp_0, imp_1" in out and "level 0 random_prune" not in out, "the controls start at level 1"
