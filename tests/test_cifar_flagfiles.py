"""Every CIFAR-10 flagfile parses as the command line parses it and describes its paper row;
one flagfile per architecture runs two levels on mock CIFAR-10.

CIFAR-10 itself is not needed: tfds.testing.mock_data makes TFDS return random
images with CIFAR-10's features. Iterations, batch sizes and schedule boundaries
are overridden after --flagfile, as a user would, so each run takes seconds. The
flagfiles of one architecture differ only in flags the parsing tests check, so the
runs cover each architecture once, the warm-up and the rewinding paths once each,
and the reinitialisation control three times (which keeps the suite's time down).
"""

import csv
import glob
import os

import pytest
import tensorflow_datasets as tfds
from absl import flags

from tf_lottery import data
from tf_lottery import flags as flags_lib
from tf_lottery.lottery import plan as plan_lib
from tf_lottery.lottery import imp

FLAGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flags")
CIFAR_FLAGFILES = (
    "conv2_cifar10", "conv4_cifar10", "conv6_cifar10",
    "conv2_dropout_cifar10", "conv4_dropout_cifar10", "conv6_dropout_cifar10",
    "resnet18", "resnet18_rewind", "vgg19", "vgg19_rewind",
)
# Small enough for seconds a run; schedule flags move inside the shorter training.
MOCK_EXAMPLES = 32  # per split; the validation split takes 8 of the training split's
SHORT = ("--iterations=4", "--batch_size=4", "--eval_every=4", "--checkpoint_every=2", "--validation_size=8",
         "--eval_batch_size=64", "--levels=1", "--noprogress")
SHORT_SCHEDULE = ("--lr_boundaries=2,3", "--warmup_iterations=2")
# One per architecture: Conv-2 (with dropout), Conv-4, Conv-6, Resnet-18 (warm-up), VGG-19 (rewinding).
RUN = ("conv2_dropout_cifar10", "conv4_cifar10", "conv6_cifar10", "resnet18", "vgg19_rewind")
# The reinitialisation control in three of them; elsewhere it only costs time.
WITH_CONTROL = ("conv2_dropout_cifar10", "conv6_cifar10", "resnet18")


def parse(name, *overrides):
    """(config, parsed flag values) from flags/<name>.cfg and overrides, as tf_lottery.main parses them."""
    flag_values = flags.FlagValues()
    flags_lib.define_flags(flag_values)
    flag_values(["tf_lottery", f"--flagfile={os.path.join(FLAGS_DIR, name + '.cfg')}", *overrides])
    return flags_lib.config_from_flags(flag_values)


def test_every_cifar_flagfile_is_listed_here():
    found = {os.path.basename(p)[:-4] for p in glob.glob(os.path.join(FLAGS_DIR, "*.cfg"))}
    cifar = {name for name in found if name.startswith(("conv", "resnet", "vgg"))}
    assert cifar == set(CIFAR_FLAGFILES)


@pytest.mark.parametrize("name", CIFAR_FLAGFILES)
def test_flagfile_header_states_what_when_and_how_long(name):
    with open(os.path.join(FLAGS_DIR, name + ".cfg")) as f:
        lines = f.read().splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert lines[0].startswith("#") and lines[:len(header)] == header, "the comment opens the file"
    text = "\n".join(header)
    for needed in ("What it reproduces", "Expected", "Time per run", "#   CPU", "#   GPU", "measured",
                   f"--flagfile=flags/{name}.cfg"):
        assert needed in text, f"{name}.cfg header lacks {needed!r}"
    assert "TIME_" not in text
    flag_lines = [line for line in lines if line and not line.startswith("#")]
    assert all(line.startswith("--") for line in flag_lines)


@pytest.mark.parametrize("name", CIFAR_FLAGFILES)
def test_flagfile_describes_the_paper_row(name):
    config = parse(name)
    model = name.replace("_cifar10", "").replace("_rewind", "")
    assert (config.data.dataset, config.model.model, config.experiment_name) == ("cifar10", model, name)
    iterations, batch = {"conv2": (20_000, 60), "conv4": (25_000, 60), "conv6": (30_000, 60),
                         "resnet18": (30_000, 128), "vgg19": (112_480, 64)}[model.replace("_dropout", "")]
    assert (config.training.iterations, config.data.batch_size) == (iterations, batch)
    deep = model in ("resnet18", "vgg19")
    assert config.data.augment == ("on" if deep else "off")
    assert config.pruning.pruning_scope == ("global" if deep else "layerwise")
    assert (config.pruning.rewind_iteration > 0) == name.endswith("_rewind")
    assert (config.training.warmup_iterations > 0) == (deep and not name.endswith("_rewind"))
    assert config.training.optimizer == ("momentum" if deep else "adam")


@pytest.fixture(scope="module")
def mock_cifar10():
    data.load.cache_clear()
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        yield
    data.load.cache_clear()  # no later test may get these random images for cifar10


def test_the_runs_cover_every_architecture():
    def architectures(names):  # a dropout model is its plain twin with dropout layers (models/conv.py)
        return {parse(name).model.model.replace("_dropout", "") for name in names}

    assert architectures(RUN) == architectures(CIFAR_FLAGFILES)
    assert any(parse(n).training.warmup_iterations for n in RUN) and any(parse(n).pruning.rewind_iteration for n in RUN)


@pytest.mark.parametrize("name", RUN)
def test_flagfile_runs_two_levels_and_writes_results(name, tmp_path, mock_cifar10):
    overrides = list(SHORT) + [f"--output_dir={tmp_path}"]
    if name.startswith(("resnet", "vgg")):
        overrides += SHORT_SCHEDULE if not name.endswith("_rewind") else ("--lr_boundaries=2,3",)
    if name.endswith("_rewind"):
        overrides.append("--rewind_iteration=1")
    if name not in WITH_CONTROL:
        overrides.append("--controls=")
    config = parse(name, *overrides)
    plan = plan_lib.make_plan(config)
    assert plan.dataset.input_shape == (32, 32, 3) and plan.dataset.num_classes == 10
    imp.run_experiment(config)
    with open(os.path.join(tmp_path, name, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    expected = [("0", "imp"), ("1", "imp")] + ([("1", "reinit")] if name in WITH_CONTROL else [])
    assert [(r["level"], r["variant"]) for r in rows] == expected
    densities = [float(r["density"]) for r in rows]
    assert densities[0] == 1.0 and densities[1] == pytest.approx(plan.densities(config.pruning.pruning_scope, 1)[1])
    assert all(0.0 <= float(r["final_test_accuracy"]) <= 1.0 for r in rows)
    assert all(int(r["final_iteration"]) == 4 for r in rows)
