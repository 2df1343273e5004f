"""What the branch tests share: the branch command in this process, and copies of a parent."""

import contextlib
import glob
import hashlib
import os
import subprocess

from tf_lottery import branch as branch_cli


def run_branch(*args):
    """tf_lottery.branch in this process: its exit code (stdout and stderr are the caller's to capture)."""
    try:
        return branch_cli.main(["tf_lottery.branch", *args])
    except SystemExit as exit_:
        return exit_.code


def copy_of(root, path):
    """A copy of the experiment folder `root` at `path`, for a test that writes into it."""
    subprocess.run(["cp", "-r", root, str(path)], check=True)
    return str(path)


def digest(root):
    """A hash of every file's path and bytes under `root` (lock files' bytes aside): equal when nothing changed."""
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(root, "**"), recursive=True)):
        h.update(path.encode())
        if os.path.isfile(path) and not path.endswith(".lock"):
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@contextlib.contextmanager
def deterministic_parent(folder, name="parent", **overrides):
    """A finished --deterministic experiment `name` (levels 0-1 of conftest's small MLP) under `folder`:
    yields (its root, its rows). Op determinism is on meanwhile, as the commands turn it on for
    --deterministic, and off again after (the public API can only turn it on)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow.python.framework import config as framework_config  # pylint: disable=import-outside-toplevel

    from conftest import small_config  # pylint: disable=import-outside-toplevel
    from tf_lottery.lottery import imp  # pylint: disable=import-outside-toplevel

    tf.config.experimental.enable_op_determinism()
    try:
        config = small_config(folder, levels=1, deterministic=True, experiment_name=name, **overrides)
        rows = imp.run_experiment(config)
        yield os.path.join(config.run.output_dir, name), rows
    finally:
        framework_config.disable_op_determinism()
