"""What the branch tests share: the branch command in this process, and copies of a parent."""

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
