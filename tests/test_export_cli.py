"""The export command line: one-line errors for what cannot be exported, one line per format otherwise."""

import os

import pytest

from tf_lottery.export import __main__ as cli


def _run(capsys, *args):
    try:
        code = cli.main(["tf_lottery.export", *args])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("args, message", [
    ((), "--experiment_dir is required"),
    (("--experiment_dir={missing}",), "does not exist"),
    (("--experiment_dir={parent}",), "has no config.json"),
    (("--experiment_dir={dir}", "--level=9"), "level 9 of imp replicate 0 has not finished (finished levels: 0-3)"),
    (("--experiment_dir={dir}", "--level=most"), "expected a level number, 'best' or 'final'"),
    (("--experiment_dir={dir}", "--variant=reinit"), "no finished 'reinit' run"),
    (("--experiment_dir={dir}", "--replicate=2"), "no finished run of replicate 2"),
    (("--experiment_dir={dir}", "--format=onnx,tflite"), "unknown format onnx"),
    (("--experiment_dir={dir}", "--quantize=int4"), "--quantize"),
    (("--experiment_dir={dir}", "--tolerance=-1"), "--tolerance: must be >= 0"),
    (("--experiment_dir={dir}", "stray"), "unexpected arguments"),
])
def test_bad_arguments_are_one_line_errors(pruned_experiment, tmp_path, capsys, args, message):
    values = {"dir": pruned_experiment, "missing": str(tmp_path / "nothing"), "parent": os.path.dirname(pruned_experiment)}
    output = tmp_path / "out"
    code, out, err = _run(capsys, *[a.format(**values) for a in args], f"--output={output}")
    assert code == 2
    assert err.startswith("tf_lottery.export: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not os.path.exists(os.path.join(output, "export.json"))


def test_best_level_ticket_from_the_command_line(pruned_experiment, tmp_path, capsys):
    code, out, err = _run(capsys, f"--experiment_dir={pruned_experiment}", "--level=best", "--format=ticket",
                          f"--output={tmp_path}")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("ticket") and str(tmp_path / "ticket.npz") in lines[0]
    assert lines[-1].startswith("exported level ") and "export.json" in lines[-1]
    assert os.path.exists(tmp_path / "ticket.npz")
