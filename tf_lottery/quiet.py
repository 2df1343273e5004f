"""Starting TensorFlow without its C++ start-up chatter on the terminal.

TensorFlow 2.21 prints informational lines (oneDNN, CUDA stubs) from C++ before its
logging is initialised, where TF_CPP_MIN_LOG_LEVEL cannot reach them. They bury the
one line a user needs, so the command line starts TensorFlow with stderr captured
and replays everything except those lines (all of it, if starting fails).
"""

import contextlib
import os
import re
import sys
import tempfile

_CHATTER = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+ +\d+ \S+\] .*"
    r"|E\d{4} [\d:.]+ +\d+ cuda_[a-z_]+\.cc:\d+\] failed call to cuInit.*"
    r"|.*This TensorFlow binary is optimized to use available CPU instructions.*"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow .*)$"
)


@contextlib.contextmanager
def _filtered_stderr():
    """Captures file descriptor 2 inside the block and replays it without the chatter
    (all of it, if the block fails)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if failed or not _CHATTER.match(line):
                    sys.stderr.write(line + "\n")


def import_tensorflow():
    """Imports TensorFlow (without initialising its devices); returns the module."""
    with _filtered_stderr():
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf


def start_tensorflow(before_devices=None):
    """Imports TensorFlow and initialises its devices; returns the module.

    Args:
      before_devices: called with the tensorflow module after the import and before
        devices are initialised: logical device configuration belongs there.
    """
    tf = import_tensorflow()
    with _filtered_stderr():
        if before_devices is not None:
            before_devices(tf)
        tf.config.list_logical_devices()
    return tf
