"""tf_lottery command line: flags -> config -> strategy -> runner.

    python -m tf_lottery.main --flagfile=flags/quickstart.cfg

A bad flag or dataset stops before anything is written, with one line naming the
flag and exit code 2. A run that fails later (a diverging loss, an unreadable
checkpoint) stops with one line and exit code 1, keeping every finished run.
"""

import sys
import warnings

import tf_lottery  # noqa: F401  (selects tf_keras before TensorFlow loads)
from absl import app, flags, logging

from tf_lottery import flags as flags_lib

FLAGS = flags.FLAGS
USAGE_ERROR, RUN_ERROR = 2, 1


def _fail(code: int, message: str):
    sys.stderr.write(f"tf_lottery: error: {message}\n")
    sys.exit(code)


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        _fail(USAGE_ERROR, str(error).splitlines()[0])


def main(argv):
    if len(argv) > 1:
        _fail(USAGE_ERROR, f"unexpected arguments {' '.join(argv[1:])!r}; every setting is a --flag")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TFDS logs every file it opens at INFO
    # Raised by tf.data inside tf.distribute's own input code, about nothing a user can change.
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    from tf_lottery.config import ConfigError  # pylint: disable=import-outside-toplevel

    try:
        config = flags_lib.config_from_flags(FLAGS)
    except ConfigError as error:
        _fail(USAGE_ERROR, str(error).splitlines()[0])
    # Started only now, so that --help and flag errors answer before TensorFlow loads.
    from tf_lottery import quiet  # pylint: disable=import-outside-toplevel

    def set_up_devices(_):
        # Logical devices (--num_cpu_devices) and multi-worker collectives are fixed
        # once TensorFlow initialises its devices.
        from tf_lottery import distribute  # pylint: disable=import-outside-toplevel

        distribute.configure_devices(config.run)

    try:
        tf = quiet.start_tensorflow(before_devices=set_up_devices)
    except ConfigError as error:  # a bad TF_CONFIG, say
        _fail(USAGE_ERROR, str(error).splitlines()[0])

    from tf_lottery import distribute, registry  # pylint: disable=import-outside-toplevel
    from tf_lottery.data import DataError  # pylint: disable=import-outside-toplevel
    from tf_lottery.lottery import plan as plan_lib, runner  # pylint: disable=import-outside-toplevel
    from tf_lottery.training.checkpoints import CheckpointError  # pylint: disable=import-outside-toplevel

    try:
        # Collectives are fixed when the strategy is made: before the plan builds a model.
        strategy = None if config.run.dry_run else distribute.make_strategy(config.run)
        if config.run.deterministic:
            tf.config.experimental.enable_op_determinism()
        plan = plan_lib.make_plan(config)
        paths = runner.ExperimentPaths.of(config.run.output_dir, config.experiment_name)
        runner.check_compatible(paths, config)
        if config.run.dry_run:
            print(plan_lib.format_plan(plan, config))
            print(f"experiment folder: {paths.root}")
            return 0
        experiment = runner.Experiment(config, strategy)
    except (ConfigError, registry.UnknownNameError, DataError, ValueError) as error:
        _fail(USAGE_ERROR, str(error).splitlines()[0])
    try:
        experiment.run()
    except DataError as error:
        _fail(USAGE_ERROR, str(error).splitlines()[0])
    except (runner.DivergenceError, CheckpointError) as error:
        _fail(RUN_ERROR, str(error).splitlines()[0])
    except KeyboardInterrupt:
        _fail(RUN_ERROR, "interrupted; run the same command again to resume")
    print(f"results: {experiment.paths.results}")
    if config.run.export_final and distribute.is_chief(experiment.strategy):
        from tf_lottery import export  # pylint: disable=import-outside-toplevel

        try:
            for summary in export.export_final(experiment.paths.root, config.run.replicates):
                print(f"export: {summary['output']}")
        except export.ExportError as error:
            _fail(RUN_ERROR, str(error).splitlines()[0])
    return 0


def run():
    """Console-script entry point (`tf-lottery`)."""
    flags_lib.define_flags()
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
