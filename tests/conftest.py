"""Shared test set-up: tf_keras, the prepared MNIST, and small experiment configs."""

import csv
import glob
import os
import signal
import subprocess
import sys
import time

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TFDS = os.path.abspath(os.path.join(REPO, "..", "shared", "tensorflow_datasets"))
if not os.environ.get("TFDS_DATA_DIR") and os.path.isdir(SHARED_TFDS):
    os.environ["TFDS_DATA_DIR"] = SHARED_TFDS

import tf_lottery  # noqa: E402,F401  (selects tf_keras before TensorFlow loads)
from tf_lottery.config import ExperimentConfig  # noqa: E402

SMALL = dict(
    dataset="mnist", model="mlp", hidden_units=(16,), iterations=60, batch_size=32, eval_every=20,
    checkpoint_every=20, eval_batch_size=2500, learning_rate=3e-3, prune_rate=0.5, levels=2,
    progress=False,
)


def small_config(output_dir, **overrides) -> ExperimentConfig:
    """A seconds-long experiment on the real MNIST; override any flat field."""
    return ExperimentConfig.from_flat({**SMALL, "output_dir": str(output_dir), **overrides})


@pytest.fixture
def make_config(tmp_path):
    return lambda **overrides: small_config(tmp_path, **overrides)


def run_main(*args, timeout=300, **kwargs):
    """Runs `python -m tf_lottery.main ARGS` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "tf_lottery.main", *args], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, **kwargs,
    )


def small_flags(output_dir, **overrides):
    """SMALL as command-line flags."""
    return as_flags({**SMALL, "output_dir": str(output_dir), **overrides})


def as_flags(values):
    """{field name: value} as tf_lottery.main's command-line flags."""
    args = []
    for name, value in values.items():
        if isinstance(value, bool):
            args.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, tuple):
            args.append(f"--{name}={','.join(map(str, value))}")
        else:
            args.append(f"--{name}={value}")
    return args


@pytest.fixture(scope="session")
def pruned_experiment(tmp_path_factory):
    """A finished 4-level experiment: levels 0-3, the hidden layer down to 0.8% density.

    Shared by the export and ticket tests; treat it as read-only.
    """
    from tf_lottery.experiment.paths import ExperimentPaths  # pylint: disable=import-outside-toplevel
    from tf_lottery.lottery import imp  # pylint: disable=import-outside-toplevel

    config = small_config(tmp_path_factory.mktemp("pruned"), hidden_units=(32,), prune_rate=0.8, levels=3,
                          experiment_name="pruned")
    imp.run_experiment(config)
    return ExperimentPaths.of(config.run.output_dir, config.experiment_name).root


def write_csv(path, columns, rows, extrasaction="raise"):
    """Writes rows (dicts) as a CSV with a header; a key outside `columns` is an error unless
    extrasaction="ignore"."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction=extrasaction)
        writer.writeheader()
        writer.writerows(rows)


def kill_9_once_written(command, pattern, timeout=600, env=None):
    """Starts `command` in REPO, sends it SIGKILL as soon as a path matches the glob `pattern` (or it
    exits, or `timeout` seconds pass), and returns the matching paths (empty: it never wrote one)."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not glob.glob(pattern):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return glob.glob(pattern)
