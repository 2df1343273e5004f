"""The command line's front door: `tf-lottery <command>`, one help page per command, one error style.

The console script is run as `python -c "from tf_lottery.console import run; run()"`
(the installed entry point may predate it until `pip install -e .` is rerun).
"""

import os
import subprocess
import sys

import pytest

from conftest import REPO, run_main, small_config, small_flags
from tf_lottery import console, help as help_lib
from tf_lottery.lottery import imp

CONSOLE = "from tf_lottery.console import run; run()"
# Prints whether TensorFlow was imported, however the command exits.
WATCH_TF = ("import atexit, sys; atexit.register(lambda: sys.stderr.write("
            "'TENSORFLOW_LOADED=%s\\n' % ('tensorflow' in sys.modules))); ")
SUBCOMMANDS = ("train", "dry-run", "branch", "report", "export")
ABSL_FLAGS = ("--verbosity", "--logtostderr", "--alsologtostderr", "--only_check_args")
# A command's own flags its help must list, and names it must list.
MAIN = ("--flagfile=FILE", "--dataset=NAME", "--model=NAME", "--prune_rate=FLOAT", "--controls={reinit,random_prune}",
        "--optimizer={adam,sgd,momentum}", "--output_dir=DIR", "--[no]dry_run", "--[no]traceback",
        "\ndata:\n", "\nmodel:\n", "\npruning:\n", "\ntraining:\n", "\nrun:\n", "lenet300_100", "resnet18", "mnist",
        "flags/quickstart.cfg", "(default: 0.2)")
EXPECTED = {
    "main": MAIN, "train": MAIN, "dry-run": MAIN,
    "branch": ("--experiment_dir=DIR", "--branch=NAME", "--levels=LEVELS", "--variants=", "--[no]dry_run",
               "random_prune", "stability", "transfer", "--learning_rate"),
    "report": ("--experiment_dir=DIR (repeatable)", "--output=DIR", "--tolerance=FLOAT", "(default: 0.005)"),
    "export": ("--experiment_dir=DIR", "--format={saved_model,sparse_saved_model,tflite,ticket}",
               "--quantize={none,dynamic,int8}", "--variant={imp,reinit,random_prune}", "ticket.npz", "model.tflite"),
}
MODULES = {"main": "tf_lottery.main", "branch": "tf_lottery.branch", "report": "tf_lottery.report",
           "export": "tf_lottery.export"}


def _python(code, *args, timeout=120):
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def _module(module, *args):
    """`python -m module args`, reporting whether TensorFlow was imported."""
    return _python(WATCH_TF + f"import runpy; sys.argv = [{module!r}] + sys.argv[1:]; "
                   f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)", *args)


def _console(*args):
    return _python(WATCH_TF + CONSOLE, *args)


def _check_page(result, command):
    assert result.returncode == 0, result.stderr[-2000:]
    page = result.stdout
    assert page.startswith("usage: ") and "\nexample:\n  " in page, page[:500]
    for fragment in EXPECTED[command]:
        assert fragment in page, (command, fragment)
    for flag in ABSL_FLAGS:
        assert flag not in page, (command, flag)
    assert "TENSORFLOW_LOADED=False" in result.stderr, "help loaded TensorFlow"


@pytest.mark.parametrize("option", ["--help", "-h"])
@pytest.mark.parametrize("command", sorted(MODULES))
def test_every_python_m_form_answers_help_with_its_own_flags(command, option):
    result = _module(MODULES[command], option)
    _check_page(result, command)
    assert f"usage: python -m {MODULES[command]}" in result.stdout


@pytest.mark.parametrize("option", ["--help", "-h"])
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_answers_help_with_its_own_flags(command, option):
    result = _console(command, option)
    _check_page(result, command)
    assert f"usage: tf-lottery {command}" in result.stdout
    assert f"example:\n  tf-lottery {command} " in result.stdout


def test_help_follows_other_flags_and_help_subcommand_equals_dash_dash_help():
    with_flags = _console("export", "--experiment_dir=runs/x", "--help")
    assert with_flags.returncode == 0 and with_flags.stdout == _console("help", "export").stdout


def test_helpfull_adds_absls_own_flags_to_the_main_command():
    result = _module("tf_lottery.main", "--helpfull")
    assert result.returncode == 0, result.stderr[-2000:]
    own, absl = result.stdout.split("absl's own flags:")
    assert "--prune_rate=FLOAT" in own and "--verbosity" not in own
    assert "--verbosity=INT" in absl and "--[no]logtostderr" in absl and "--prune_rate" not in absl


@pytest.mark.parametrize("args", [(), ("--help",), ("-h",), ("help",)])
def test_tf_lottery_alone_lists_the_five_subcommands(args, capsys):
    assert console.main(["tf-lottery", *args]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("commands:\n")[1].split("\n\n")[0].splitlines()
              if line.startswith("  ") and not line.startswith("   ")]
    assert listed == list(SUBCOMMANDS)


def test_an_unknown_subcommand_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        console.main(["tf-lottery", "prune"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith("tf-lottery: error: unknown command 'prune'")
    assert all(name in err for name in SUBCOMMANDS)


@pytest.mark.parametrize("command", ["branch", "report", "export"])
def test_errors_have_one_style_under_the_console_command(command, capsys):
    try:
        code = console.main(["tf-lottery", command])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"tf-lottery {command}: error: --experiment_dir is required")
    assert err.count("\n") == 1


def test_a_bad_flag_of_train_is_one_line_naming_the_subcommand():
    result = _console("train", "--prune_rate=2")
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if "error" in line] == [
        "tf-lottery train: error: --prune_rate: must be in [0, 1), got 2.0"]


def test_branch_help_with_a_branch_lists_its_options_and_refuses_an_unknown_one(capsys):
    from tf_lottery import branch as branch_cli  # pylint: disable=import-outside-toplevel

    assert branch_cli.main(["tf_lottery.branch", "--help", "--branch=stability"]) == 0
    page = capsys.readouterr().out
    assert "options of branch stability" in page and "--interpolation_points=INT  (default: 30)" in page
    assert "--pair={data,init}" in page and "--copies" not in page
    with pytest.raises(SystemExit) as exit_:
        branch_cli.main(["tf_lottery.branch", "--help", "--branch=nope"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "unknown branch 'nope'" in err


def test_the_help_catalogue_is_what_the_registries_hold():
    from tf_lottery import branch as branch_cli, branches, models  # pylint: disable=import-outside-toplevel

    # other tests register models of their own; the catalogue lists the project's
    assert list(help_lib.MODELS) == [n for n in models.names() if models.spec(n).factory.__module__.startswith("tf_lottery.")]
    assert help_lib.BRANCHES == {n: branches.get(n).description for n in branches.names() if n in help_lib.BRANCHES}
    assert sorted(help_lib.BRANCHES) == [n for n in branches.names() if branches.get(n).__module__.startswith("tf_lottery.")]
    assert branch_cli.COMMAND_FLAGS == branches.COMMAND_FLAGS


def test_dry_run_subcommand_prints_the_schedule_and_writes_nothing(tmp_path):
    result = _console("dry-run", "--flagfile=flags/quickstart.cfg", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "level   density   remaining" in result.stdout and "    4     6.35%" in result.stdout
    assert f"experiment folder: {tmp_path / 'out' / 'quickstart'}" in result.stdout
    assert not (tmp_path / "out").exists()


def test_tally_lines():
    tally = imp.Tally()
    for was_finished, result in [(True, {}), (False, {}), (False, None), (True, {})]:
        tally.add(was_finished, result)
    assert tally.line() == "trained 1 run, 2 already finished, 1 left to another process training them"
    assert imp.Tally(finished=13).line() == "13 of 13 runs already finished; trained 0"


def test_a_rerun_says_what_was_finished_and_points_at_the_report(tmp_path):
    imp.run_experiment(small_config(tmp_path, levels=1, experiment_name="e"))  # runs of levels 0 and 1
    folder = tmp_path / "e"
    extended = run_main(*small_flags(tmp_path, levels=2, experiment_name="e"))
    assert extended.returncode == 0, extended.stderr[-2000:]
    lines = extended.stdout.strip().splitlines()
    assert "trained 1 run, 2 already finished" in lines
    assert lines[-1] == f"report: tf-lottery report --experiment_dir={folder}"
    # A rerun of the whole finished experiment, in this process: nothing trained, all counted.
    loop = imp.ImpLoop(small_config(tmp_path, levels=2, experiment_name="e"))
    loop.run()
    assert loop.tally.line() == "3 of 3 runs already finished; trained 0"
