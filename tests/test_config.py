"""Experiment identity: pinned hashes of the shipped flagfiles, the whole stored config
compared on reuse, integers the int64 step counter can hold, and the data seed."""

import glob
import json
import os

import pytest
from absl import flags

from conftest import REPO, small_config
from tf_lottery import flags as flags_lib
from tf_lottery.config import ConfigError, ExperimentConfig
from tf_lottery.experiment.paths import ExperimentPaths
from tf_lottery.experiment.reader import check_compatible
from tf_lottery.utils import derive_seed, write_json

# (experiment hash: the name of its folder, fingerprint: every hashed value, defaults
# included). A change here means an existing experiment folder now means something
# else: change a pin only together with a note on what old folders become. The
# fingerprints moved with --retrain, the --early_bird settings, --mask_criterion, --classes and the structured-ticket
# settings (--pruning_structure, --channel_score, --n_of_m, --bn_l1), the language-model sizes
# (--embedding_dim, --lstm_units, --num_blocks, --num_heads, --mlp_dim), added at defaults
# that reproduce what runs did before: old folders keep their names and resume.
PINNED = {
    "cartpole.cfg": ("1fffe458", "cb8fe6a7"),
    "conv2_cifar10.cfg": ("6dde92d5", "9db930f2"),
    "conv2_dropout_cifar10.cfg": ("45e98615", "35b19548"),
    "conv4_cifar10.cfg": ("f429cec1", "142c9ba6"),
    "conv4_dropout_cifar10.cfg": ("173b7348", "928a8474"),
    "conv6_cifar10.cfg": ("0cec9c66", "0539a78e"),
    "conv6_dropout_cifar10.cfg": ("3959840a", "62410f4e"),
    "lenet300_fashion_mnist_24k.cfg": ("9cabe2da", "fa25ced4"),
    "lenet300_mnist.cfg": ("ef5eaa1c", "814a12ce"),
    "lenet300_mnist_24k.cfg": ("3bed4275", "c138fd0d"),
    "lenet300_mnist_combine.cfg": ("dcc261d8", "9d2f1fc4"),
    "lenet300_mnist_deconstructing.cfg": ("7c2ceab0", "3dce47dd"),
    "lenet300_mnist_methods.cfg": ("2e777276", "5f74328f"),
    "lenet300_mnist_neurons.cfg": ("9137d82d", "2f6edd71"),
    "lenet5_fashion_mnist_channels.cfg": ("0a43f1b0", "24168b85"),
    "lstm_tiny_shakespeare.cfg": ("32c11a2d", "1639a3a0"),
    "quickstart.cfg": ("8b09a594", "0ba999e8"),
    "resnet18.cfg": ("09b69e52", "09c47536"),
    "resnet18_rewind.cfg": ("38d3acff", "1902381a"),
    "smoke.cfg": ("8bd73745", "a4799766"),
    "transformer_tiny_shakespeare.cfg": ("7dc10bdb", "903cdb7f"),
    "vgg19.cfg": ("b4b64244", "f186f198"),
    "vgg19_rewind.cfg": ("023b13e2", "9e8a793b"),
}


def _flagfile_config(path) -> ExperimentConfig:
    flag_values = flags.FlagValues()
    flags_lib.define_flags(flag_values)
    flag_values(["test", f"--flagfile={path}"])
    return flags_lib.config_from_flags(flag_values)


def test_every_shipped_flagfile_keeps_its_experiment_hash_and_fingerprint():
    shipped = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "flags", "*.cfg")))
    assert shipped == sorted(PINNED), "a flagfile was added or removed: pin its hashes here"
    for name, pinned in PINNED.items():
        config = _flagfile_config(os.path.join(REPO, "flags", name))
        assert (config.experiment_hash(), config.fingerprint()) == pinned, name


def test_a_changed_default_is_caught_by_the_whole_config_comparison(tmp_path):
    config = small_config(tmp_path)
    paths = ExperimentPaths.of(config.run.output_dir, config.experiment_name)
    stored = config.flat()
    write_json(paths.config, {"hashed": config.hashed_values(), "config": stored})
    check_compatible(paths, config)  # the same settings
    # The folder was made when --momentum's default was 0.8: same name, other meaning.
    write_json(paths.config, {"hashed": config.hashed_values(), "config": {**stored, "momentum": 0.8}})
    with pytest.raises(ConfigError, match="differs in --momentum"):
        check_compatible(paths, config)
    # A setting added since the folder was made is compared at its default.
    del stored["data_seed"]
    write_json(paths.config, {"hashed": config.hashed_values(), "config": stored})
    check_compatible(paths, config)
    with pytest.raises(ConfigError, match="--data_seed"):
        check_compatible(paths, config.replace(data_seed=3))
    with open(paths.config) as f:
        assert json.load(f)["config"].get("data_seed") is None


@pytest.mark.parametrize("field", ["iterations", "seed", "eval_every", "lr_boundaries"])
def test_integers_beyond_the_int64_step_counter_are_refused(tmp_path, field):
    value = (2**64,) if field == "lr_boundaries" else 99999999999999999999
    with pytest.raises(ConfigError, match=f"--{field}: .* does not fit the int64 step counter"):
        small_config(tmp_path, **{field: value})


def test_the_default_data_seed_is_the_one_replicates_always_used(tmp_path):
    config = small_config(tmp_path, seed=5)
    assert [config.data_seed(r) for r in range(3)] == [derive_seed(5 + r, "data") for r in range(3)]
    other = config.replace(data_seed=11)
    assert other.data_seed(1) == derive_seed(12, "data") != config.data_seed(1)
    assert other.experiment_hash() != config.experiment_hash()
    assert config.replace(data_seed=-1).experiment_hash() == config.experiment_hash()
    with pytest.raises(ConfigError, match="--data_seed"):
        config.replace(data_seed=-2)
