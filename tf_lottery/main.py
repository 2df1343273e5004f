"""tf_lottery command line: flags -> config -> strategy -> the IMP loop.

    python -m tf_lottery.main --flagfile=flags/quickstart.cfg    # or: tf-lottery train --flagfile=...
    python -m tf_lottery.main --help                              # its flags by section; --helpfull adds absl's

A bad flag or dataset stops before anything is written, with one line naming the
flag and exit code 2. A run that fails later (a diverging loss, an unreadable
checkpoint or weights file) stops with one line and exit code 1, keeping every
finished run. --traceback prints the whole trace as well.
"""

import dataclasses
import sys
import warnings

import tf_lottery  # noqa: F401  (selects tf_keras before TensorFlow loads)
from absl import app, flags, logging

from tf_lottery import cli
from tf_lottery import config as config_lib
from tf_lottery import flags as flags_lib
from tf_lottery import help as help_lib
from tf_lottery.errors import USAGE

FLAGS = flags.FLAGS
PROG = "tf_lottery"
_prog = PROG  # what errors are prefixed with: `tf-lottery train` when run through the console command
FLAGFILE_HELP = "Read flags from FILE, one --name=value a line (later flags override it)."


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        cli.fail(_prog, USAGE, str(error).splitlines()[0])


def start_tensorflow(run_config):
    """Starts TensorFlow quietly with the devices `run_config` asks for; returns the module.

    Logical devices (--num_cpu_devices) and multi-worker collectives are fixed once
    TensorFlow initialises its devices, so they are set up in its start-up hook.
    """
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TFDS logs every file it opens at INFO
    # Raised by tf.data inside tf.distribute's own input code, about nothing a user can change.
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    from tf_lottery import quiet  # pylint: disable=import-outside-toplevel

    def set_up_devices(_):
        from tf_lottery import distribute  # pylint: disable=import-outside-toplevel

        distribute.configure_devices(run_config)

    tf = quiet.start_tensorflow(before_devices=set_up_devices)
    if run_config.deterministic:
        tf.config.experimental.enable_op_determinism()
    return tf


def main(argv):
    with cli.one_line_errors(_prog, FLAGS.traceback):
        return _main(argv)


def _main(argv):
    if len(argv) > 1:
        cli.fail(_prog, USAGE, f"unexpected arguments {' '.join(argv[1:])!r}; every setting is a --flag")
    config = flags_lib.config_from_flags(FLAGS)
    from tf_lottery.experiment.paths import ExperimentPaths  # pylint: disable=import-outside-toplevel
    from tf_lottery.experiment.reader import check_compatible  # pylint: disable=import-outside-toplevel

    check_compatible(ExperimentPaths.of(config.run.output_dir, config.experiment_name), config)
    # Started only now, so that --help and flag errors answer before TensorFlow loads.
    start_tensorflow(config.run)
    from tf_lottery import distribute  # pylint: disable=import-outside-toplevel
    from tf_lottery.lottery import imp, plan as plan_lib  # pylint: disable=import-outside-toplevel

    # Collectives are fixed when the strategy is made: before the plan builds a model.
    strategy = None if config.run.dry_run else distribute.make_strategy(config.run)
    plan = plan_lib.make_plan(config)
    loop = imp.ImpLoop(config, strategy)
    if config.run.dry_run:
        print(plan_lib.format_plan(plan, config))
        print(f"experiment folder: {loop.paths.root}")
        return 0
    loop.run()
    print(loop.tally.line())
    print(f"results: {loop.paths.results}")
    if config.run.export_final and distribute.is_chief(strategy):
        from tf_lottery import export  # pylint: disable=import-outside-toplevel

        for summary in export.export_final(loop.paths.root, config.run.replicates):
            print(f"export: {summary['output']}")
    print(f"report: {help_lib.CONSOLE} report --experiment_dir={loop.paths.root}")
    return 0


def define_flags():
    flags_lib.define_flags()
    if "traceback" not in FLAGS:
        flags.DEFINE_bool("traceback", False, cli.TRACEBACK_HELP)


def help_text(prog: str = PROG, full: bool = False, dry_run: bool = False, argv=()) -> str:
    """The --help page (with absl's own flags too, `full`); `argv` may name a --data_dir. Needs define_flags()."""
    command = "dry-run" if dry_run else "train"
    fields = {s: list(dataclasses.fields(kind)) for s, kind in config_lib.SECTIONS.items()}
    choices = {f.name: f.metadata["choices"] for fs in fields.values() for f in fs if f.metadata["choices"]}
    models = help_lib.model_names()
    extra = {"model": f"Registered: {', '.join(models)}.",
             "dataset": f"Known here: {', '.join(help_lib.dataset_names(argv))} (see datasets below)."}
    sections = [(section, help_lib.flag_entries(FLAGS, [f.name for f in fs], choices, extra))
                for section, fs in fields.items()]
    sections[-1][1].extend([*help_lib.flag_entries(FLAGS, ["traceback"]), help_lib.Entry("--flagfile=FILE", FLAGFILE_HELP)])
    own = [f.name for fs in fields.values() for f in fs] + ["traceback"]
    if full:
        sections.append(("absl's own flags", help_lib.absl_entries(FLAGS, own)))
    purpose = help_lib.COMMANDS[command].summary + (
        "" if dry_run else " --dry_run (or `tf-lottery dry-run`) checks the flags and prints the schedule instead.")
    lists = [("models", ", ".join(models)), ("datasets", help_lib.datasets_line(argv)),
             ("flagfiles", ", ".join(help_lib.flagfiles()) or "none")]
    return help_lib.render(f"{help_lib.invocation(command, prog)} [--flagfile=FILE] [--flag=VALUE ...]", purpose,
                           help_lib.example(command, prog), sections, lists,
                           help_lib.footer(prog, "a run that failed (every finished run is kept)", full, absl_flags=True))


def run(argv=None, prog: str = PROG, dry_run: bool = False):
    """Entry point of `python -m tf_lottery.main` and of `tf-lottery train` / `dry-run` (`dry_run`); exits."""
    global _prog  # pylint: disable=global-statement
    argv = list(sys.argv if argv is None else argv)
    define_flags()
    wanted = help_lib.requested(argv[1:])
    if wanted:
        sys.stdout.write(help_text(prog, full=wanted == "helpfull", dry_run=dry_run, argv=argv))
        sys.exit(0)
    _prog = prog
    try:
        app.run(main, argv=argv + ["--dry_run"] * dry_run, flags_parser=_parse_flags)
    finally:
        _prog = PROG


if __name__ == "__main__":
    run()
