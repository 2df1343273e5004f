"""What every command line shares: one line and an exit code for a tf_lottery error.

A tf_lottery.errors.Error stops the command with `<prog>: error: <one line>` and
its exit code (2 bad input, 1 a run that failed). --traceback or
TF_LOTTERY_TRACEBACK=1 prints the whole trace too, for a bug report. Any other
exception is a bug and keeps its traceback.
"""

import contextlib
import os
import sys
import traceback

from tf_lottery import errors

TRACEBACK_HELP = "On an error, print the full traceback too (for bug reports; also TF_LOTTERY_TRACEBACK=1)."


def wants_traceback(flag: bool = False) -> bool:
    return bool(flag) or os.environ.get("TF_LOTTERY_TRACEBACK", "") not in ("", "0")


def fail(prog: str, code: int, message: str):
    """Writes one error line and exits with `code`."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.exit(code)


def parse_flags(prog: str, flag_values, argv):
    """Parses argv into absl `flag_values`; a bad flag or a stray argument ends in one line, exit 2."""
    from absl import flags  # pylint: disable=import-outside-toplevel

    try:
        extra = flag_values(argv)
    except flags.Error as error:
        fail(prog, errors.USAGE, str(error).splitlines()[0])
    if len(extra) > 1:
        fail(prog, errors.USAGE, f"unexpected arguments {' '.join(extra[1:])!r}; every setting is a --flag")


@contextlib.contextmanager
def one_line_errors(prog: str, show_traceback: bool = False):
    """Turns a tf_lottery error (or Ctrl-C) inside the block into one line and an exit code."""
    try:
        yield
    except errors.Error as error:
        if wants_traceback(show_traceback):
            traceback.print_exc()
        fail(prog, error.exit_code, error.one_line())
    except KeyboardInterrupt:
        if wants_traceback(show_traceback):
            traceback.print_exc()
        fail(prog, errors.RUN_FAILURE, "interrupted; run the same command again to resume")
