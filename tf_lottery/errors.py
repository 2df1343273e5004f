"""The errors every tf_lottery command answers in one line, each with its exit code.

A `UsageError` (exit 2) is input the user can fix before anything runs: a flag,
a missing experiment or dataset, an unknown name. A `RunError` (exit 1) is a run
that started and could not go on: a diverging loss, a corrupted file, an export
whose outputs fail their check. Anything else is a bug and keeps its traceback.
The command-line modules catch `Error` alone (tf_lottery.cli), never a bare
ValueError, so a programming mistake is never dressed up as a usage error.
"""

USAGE, RUN_FAILURE = 2, 1
# 2**63 - 1: the largest value of the int64 step counter and of TensorFlow's int64 scalars.
INT64_MAX = 2**63 - 1


class Error(Exception):
    """A failure with a one-line message and the exit code a command returns for it."""

    exit_code = RUN_FAILURE

    def one_line(self) -> str:
        text = str(self).strip()
        return text.splitlines()[0] if text else type(self).__name__


class UsageError(Error):
    """Bad input: a flag, a name, a folder or a dataset that cannot be used (exit 2)."""

    exit_code = USAGE


class RunError(Error):
    """A run or export that started and failed (exit 1); what was on disk stays."""

    exit_code = RUN_FAILURE


class CorruptFileError(RunError):
    """A file tf_lottery wrote that can no longer be read; the message names it and the fix."""
