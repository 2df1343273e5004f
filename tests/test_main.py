"""The command line: bad input answers in one line and touches nothing; runs resume exactly."""

import csv
import glob
import hashlib
import os
import subprocess
import sys

import pytest
from absl import flags
from tensorflow.python.framework import config as framework_config

from conftest import REPO, kill_9_once_written, run_main, small_flags
from tf_lottery import main as main_lib
from tf_lottery.pruning.strategies import keep_count


def run_main_in_process(args, capsys):
    """main.run() in this process (no TensorFlow start-up per case): (exit code, stderr)."""
    flag_values = flags.FLAGS
    main_lib.define_flags()
    try:
        try:
            argv = main_lib._parse_flags(["tf_lottery", *args])
            code = main_lib.main(argv)
        except SystemExit as exit_:
            code = exit_.code
    finally:
        flag_values.unparse_flags()
    return code, capsys.readouterr().err


def _tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(root, "**"), recursive=True)):
        digest.update(path.encode())
        if os.path.isfile(path):
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


@pytest.mark.parametrize("flag,fragment", [
    ("--prune_rate=1.5", "--prune_rate"),
    ("--conv_prune_rate=-0.1", "--conv_prune_rate"),
    ("--rewind_iteration=60", "--rewind_iteration"),
    ("--model=resnet9000", "unknown model 'resnet9000'"),
    ("--dataset=no_such_dataset", "--dataset"),
    ("--optimizer=adagrad", "--optimizer"),
    ("--eval_every=0", "--eval_every"),
    ("--lr_values=0.1,0.01", "--lr_values"),
    ("--controls=reinit,bogus", "--controls"),
    ("--batch_size=abc", "--batch_size"),
    ("--no_such_flag=1", "no_such_flag"),
    ("--iterations=99999999999999999999", "--iterations: 99999999999999999999 does not fit the int64 step counter"),
    ("--prune_layers_ignore=fc9", "--prune_layers_ignore"),
    ("--data_seed=-5", "--data_seed"),
])
def test_bad_flags_exit_2_with_one_line_and_write_nothing(tmp_path, flag, fragment, capsys):
    output = tmp_path / "out"
    code, stderr = run_main_in_process([*small_flags(output, hidden_units=()), flag], capsys)
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("tf_lottery: error:") and fragment in stderr, stderr
    assert not output.exists()


@pytest.mark.parametrize("flag", ["--prune_rate=1.5", "--batch_size=abc"])
def test_bad_flags_exit_2_from_the_command_line(tmp_path, flag):
    result = run_main(*small_flags(tmp_path / "out"), flag)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("tf_lottery: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_rejected_flag_leaves_an_existing_experiment_untouched(tmp_path):
    args = small_flags(tmp_path, levels=1, iterations=20, eval_every=10)  # with --noprogress
    first = run_main(*args)
    assert first.returncode == 0
    assert "replicate 0" not in first.stdout + first.stderr, "--noprogress printed progress"
    experiment = os.path.join(tmp_path, os.listdir(tmp_path)[0])
    before = _tree_digest(experiment)
    name = os.path.basename(experiment)
    for bad in (["--prune_rate=2"], ["--learning_rate=0.5", f"--experiment_name={name}"]):
        result = run_main(*args, *bad)
        assert result.returncode == 2, result.stderr[-1000:]
    assert _tree_digest(experiment) == before


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    result = run_main("--flagfile=flags/lenet300_mnist.cfg", f"--output_dir={tmp_path / 'out'}", "--dry_run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "266,610 parameters" in result.stdout
    assert "fc1" in result.stdout and "235,200" in result.stdout
    level_15 = sum(keep_count(n, rate, 15) for n, rate in ((235_200, .2), (30_000, .2), (1_000, .1)))
    assert f"   15     3.58%{level_15:>12,}" in result.stdout  # fc 0.8^15, output 0.9^15
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flagfile", sorted(glob.glob(os.path.join(REPO, "flags", "*.cfg"))), ids=os.path.basename)
def test_every_flagfile_parses_in_a_dry_run(tmp_path, flagfile, capsys, monkeypatch):
    monkeypatch.setenv("TF_LOTTERY_OFFLINE", "1")  # the data line of a CIFAR flagfile would probe its host
    code, stderr = run_main_in_process([f"--flagfile={flagfile}", f"--output_dir={tmp_path}", "--dry_run"], capsys)
    assert code in (0, None), (flagfile, stderr)
    assert not os.listdir(tmp_path)


def test_missing_dataset_is_one_line_naming_data_dir(tmp_path):
    result = run_main(*small_flags(tmp_path / "out", dataset="fashion_mnist"), f"--data_dir={tmp_path / 'empty'}",
                      "--nodownload")
    assert result.returncode == 2
    assert "--data_dir" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def _results(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "train_seconds"} for row in csv.DictReader(f)]


def test_kill_9_mid_level_then_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    common = small_flags(tmp_path, iterations=200, eval_every=50, checkpoint_every=25, levels=1,
                         controls=("reinit",), deterministic=True, experiment_name="x")
    try:  # uninterrupted, in this process (--deterministic turns op determinism on: off again after)
        code, stderr = run_main_in_process([*common, f"--output_dir={tmp_path / 'whole'}"], capsys)
    finally:
        framework_config.disable_op_determinism()
    assert code in (0, None), stderr

    interrupted_dir = tmp_path / "interrupted"
    level1 = interrupted_dir / "x" / "replicate_0" / "level_01" / "imp" / "checkpoints"
    kill_9_once_written([sys.executable, "-m", "tf_lottery.main", *common, f"--output_dir={interrupted_dir}"],
                        str(level1 / "checkpoint"), timeout=240)
    assert glob.glob(str(level1 / "ckpt-*.index")), "the run never reached level 1"
    assert not (level1.parent / "result.json").exists(), "killed after level 1 finished: not mid-level"
    level0_result = interrupted_dir / "x" / "replicate_0" / "level_00" / "imp" / "result.json"
    stamp = os.stat(level0_result).st_mtime_ns

    resumed = run_main(*common, f"--output_dir={interrupted_dir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert os.stat(level0_result).st_mtime_ns == stamp, "a finished level was recomputed"
    assert _results(interrupted_dir / "x" / "results.csv") == _results(tmp_path / "whole" / "x" / "results.csv")
    with open(level1.parent / "metrics.csv") as f, open(tmp_path / "whole/x/replicate_0/level_01/imp/metrics.csv") as g:
        assert f.read() == g.read()


def test_corrupted_checkpoint_is_one_line_and_deletes_nothing(tmp_path, capsys):
    args = small_flags(tmp_path, iterations=40, eval_every=20, checkpoint_every=20, levels=0, experiment_name="c")
    checkpoint_dir = tmp_path / "c" / "replicate_0" / "level_00" / "imp" / "checkpoints"
    # The state file is written last: once it exists the checkpoint is complete.
    kill_9_once_written([sys.executable, "-m", "tf_lottery.main", *args], str(checkpoint_dir / "checkpoint"),
                        timeout=240)
    if (checkpoint_dir.parent / "result.json").exists():
        pytest.skip("the run finished before it could be interrupted")
    for path in glob.glob(str(checkpoint_dir / "ckpt-*.data-*")):
        with open(path, "r+b") as f:
            f.write(b"\x00garbage" * 64)
    before = _tree_digest(tmp_path / "c")
    code, stderr = run_main_in_process(args, capsys)
    assert code == 1, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("tf_lottery: error:")]
    assert len(errors) == 1 and "cannot be restored" in errors[0] and "delete" in errors[0]
    assert _tree_digest(tmp_path / "c") == before


def test_lenet_on_real_mnist_reaches_95_percent_with_plain_progress_lines(tmp_path):
    result = run_main("--model=lenet300_100", "--dataset=mnist", "--iterations=1500", "--batch_size=60",
                      "--learning_rate=1.2e-3", "--eval_every=500", "--levels=0", f"--output_dir={tmp_path}",
                      "--experiment_name=lenet")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "lenet" / "results.csv")))
    assert float(rows[0]["final_test_accuracy"]) >= 0.95
    assert "replicate 0 level 0 imp iteration 500/1500" in result.stderr  # not a terminal: plain lines
    assert "replicate 0 level 0 imp: density 100.00%" in result.stdout


def test_two_processes_sharing_an_experiment_train_each_run_once(tmp_path):
    args = small_flags(tmp_path, iterations=100, levels=1, controls=("reinit",), replicates=2, experiment_name="s")
    processes = [subprocess.Popen([sys.executable, "-m", "tf_lottery.main", *args, *extra], cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for extra in ([], ["--replicate=1"])]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "s" / "results.csv")))
    assert [(r["replicate"], r["level"], r["variant"]) for r in rows] == [
        ("0", "0", "imp"), ("0", "1", "imp"), ("0", "1", "reinit"),
        ("1", "0", "imp"), ("1", "1", "imp"), ("1", "1", "reinit")]
    for metrics in glob.glob(str(tmp_path / "s" / "replicate_*" / "level_*" / "*" / "metrics.csv")):
        keys = [tuple(row[:3]) for row in csv.reader(open(metrics))]
        assert len(keys) == len(set(keys)), f"{metrics} was written by two processes"


def test_a_corrupted_theta_0_is_one_line_naming_it_and_how_to_recover(tmp_path, capsys):
    args = small_flags(tmp_path, levels=0, iterations=20, eval_every=10, experiment_name="t")
    assert run_main_in_process(args, capsys)[0] in (0, None)
    theta_0 = tmp_path / "t" / "replicate_0" / "theta_0.npz"
    with open(theta_0, "r+b") as f:
        f.truncate(100)
    runs = glob.glob(str(tmp_path / "t" / "replicate_0" / "**"), recursive=True)
    before = {p: open(p, "rb").read() for p in runs if os.path.isfile(p)}
    code, stderr = run_main_in_process([*args, "--levels=1"], capsys)
    assert code == 1, stderr
    assert stderr.count("\n") == 1 and f"{theta_0} is truncated or corrupted" in stderr and "delete" in stderr, stderr
    assert {p: open(p, "rb").read() for p in before} == before, "a run's file was changed"
    code, stderr = run_main_in_process([*args, "--levels=1", "--traceback"], capsys)
    assert code == 1 and "Traceback (most recent call last)" in stderr and "BadZipFile" in stderr
