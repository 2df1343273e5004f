"""tf_lottery command line: flags -> config -> strategy -> the IMP loop.

    python -m tf_lottery.main --flagfile=flags/quickstart.cfg

A bad flag or dataset stops before anything is written, with one line naming the
flag and exit code 2. A run that fails later (a diverging loss, an unreadable
checkpoint or weights file) stops with one line and exit code 1, keeping every
finished run. --traceback prints the whole trace as well.
"""

import warnings

import tf_lottery  # noqa: F401  (selects tf_keras before TensorFlow loads)
from absl import app, flags, logging

from tf_lottery import cli
from tf_lottery import flags as flags_lib
from tf_lottery.errors import USAGE

FLAGS = flags.FLAGS
PROG = "tf_lottery"


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        cli.fail(PROG, USAGE, str(error).splitlines()[0])


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
    with cli.one_line_errors(PROG, FLAGS.traceback):
        return _main(argv)


def _main(argv):
    if len(argv) > 1:
        cli.fail(PROG, USAGE, f"unexpected arguments {' '.join(argv[1:])!r}; every setting is a --flag")
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
    print(f"results: {loop.paths.results}")
    if config.run.export_final and distribute.is_chief(strategy):
        from tf_lottery import export  # pylint: disable=import-outside-toplevel

        for summary in export.export_final(loop.paths.root, config.run.replicates):
            print(f"export: {summary['output']}")
    return 0


def define_flags():
    flags_lib.define_flags()
    if "traceback" not in FLAGS:
        flags.DEFINE_bool("traceback", False, cli.TRACEBACK_HELP)


def run():
    """Console-script entry point (`tf-lottery`)."""
    define_flags()
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
