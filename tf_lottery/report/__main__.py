"""python -m tf_lottery.report: see tf_lottery/report/__init__.py.

    python -m tf_lottery.report --experiment_dir=runs/quickstart [--experiment_dir=DIR2 ...] [--output=DIR]
    python -m tf_lottery.report --help       # or: tf-lottery report --help

A folder that is not an experiment, or a bad flag, stops with one line and exit
code 2; an experiment with nothing finished still gets a report saying so.
"""

import sys

from absl import flags

from tf_lottery import cli, help as help_lib
from tf_lottery.errors import UsageError
from tf_lottery.report import measures

PROG = "tf_lottery.report"
FLAG_NAMES = ("experiment_dir", "output", "tolerance", "bpc_tolerance", "return_tolerance", "traceback")


def define_flags(flag_values: flags.FlagValues):
    flags.DEFINE_multi_string("experiment_dir", None, "An experiment folder (with config.json and results.csv); "
                              "repeat the flag to overlay several in one report.", flag_values=flag_values)
    flags.DEFINE_string("output", None, "Folder for the figures and report.md/.html (default: <first "
                        "experiment_dir>/report).", flag_values=flag_values)
    flags.DEFINE_float("tolerance", measures.CLASSIFICATION.tolerance, "Classification: accuracy (absolute, 0.005 = "
                       "half a point) a level may lose and still match the dense network.", flag_values=flag_values)
    flags.DEFINE_float("bpc_tolerance", measures.LANGUAGE_MODEL.tolerance, "Language models: test bits per character "
                       "a level may gain over the dense network's and still match it.", flag_values=flag_values)
    flags.DEFINE_float("return_tolerance", measures.REINFORCEMENT.tolerance, "Reinforcement learning: test return "
                       "(absolute) a level may lose and still match the dense network.", flag_values=flag_values)
    flags.DEFINE_bool("traceback", False, cli.TRACEBACK_HELP, flag_values=flag_values)


def help_text(prog: str = PROG, full: bool = False) -> str:
    """The --help page."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    sections = [("report", help_lib.flag_entries(flag_values, FLAG_NAMES))]
    if full:
        sections.append(help_lib.NO_ABSL_FLAGS)
    usage = f"{help_lib.invocation('report', prog)} --experiment_dir=DIR [--experiment_dir=DIR2 ...] [--output=DIR]"
    purpose = (help_lib.COMMANDS["report"].summary + " Reads files only (no TensorFlow) and works on an experiment "
               "still running: it shows the finished levels and lists what has not finished.")
    return help_lib.render(usage, purpose, help_lib.example("report", prog), sections,
                           [("writes", "the paper's figures (PNG and SVG), report.md and a self-contained report.html")],
                           help_lib.footer(prog, "a report that could not be written"))


def main(argv=None, prog: str = PROG) -> int:
    """Parses `argv` (sys.argv[1:] by default: no program name), writes the report; returns the exit code."""
    try:
        return _main(sys.argv[1:] if argv is None else list(argv), prog)
    except SystemExit as exit_:  # a one-line error (tf_lottery.cli): its exit code
        return exit_.code


def _main(argv, prog: str) -> int:
    wanted = help_lib.requested(argv)
    if wanted:
        sys.stdout.write(help_text(prog, full=wanted == "helpfull"))
        return 0
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    cli.parse_flags(prog, flag_values, [prog, *argv])
    with cli.one_line_errors(prog, flag_values.traceback):
        if not flag_values.experiment_dir:
            raise UsageError("--experiment_dir is required (an experiment folder; repeat it to overlay several)")
        from tf_lottery.report import build_report  # pylint: disable=import-outside-toplevel

        given = {m.task.name: flag_values[m.tolerance_flag].value for m in measures.MEASURES.values()
                 if flag_values[m.tolerance_flag].present}  # a tolerance given for another task is refused
        result = build_report(flag_values.experiment_dir, flag_values.output, tolerances=given)
    for experiment in result["experiments"]:
        missing = len(experiment.missing_runs())
        state = f"{missing} planned run(s) not finished" if missing else "complete"
        print(f"{experiment.directory}: {len(experiment.rows)} finished run(s), {state}")
    print(f"report: {result['markdown']}")
    print(f"        {result['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
