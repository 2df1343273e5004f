"""What the CIFAR experiments rely on: BatchNorm resets, pruning scopes and rates, schedules, augmentation."""

import functools
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tf_lottery import data, models
from tf_lottery import flags as flags_lib
from tf_lottery.data import augment, pipeline
from tf_lottery.pruning import masks, strategies
from tf_lottery.training import checkpoints, schedules

FLAGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "flags")


def config_from_flagfile(name, *overrides):
    """The config the command line builds from flags/<name>.cfg and `overrides`."""
    flag_values = flags.FlagValues()
    flags_lib.define_flags(flag_values)
    flag_values(["tf_lottery", f"--flagfile={os.path.join(FLAGS_DIR, name + '.cfg')}", *overrides])
    return flags_lib.config_from_flags(flag_values)


# BatchNorm -------------------------------------------------------------------


def test_reset_to_theta0_restores_batchnorm_statistics(tmp_path):
    model = models.build("resnet18", (32, 32, 3), 10, seed=0)
    theta0 = str(tmp_path / "theta0.npz")
    checkpoints.save_weights(model, theta0)
    assert any("moving_mean" in n for n in checkpoints.weight_names(theta0))
    assert any("moving_variance" in n for n in checkpoints.weight_names(theta0))
    batchnorm = model.get_layer("stage2_block1_conv1_bn")
    initial_mean, initial_variance = batchnorm.moving_mean.numpy(), batchnorm.moving_variance.numpy()
    # A training-mode pass moves the statistics, as training does.
    images = np.random.default_rng(0).normal(3.0, 2.0, size=(8, 32, 32, 3)).astype(np.float32)
    model(images, training=True)
    assert not np.allclose(batchnorm.moving_mean.numpy(), initial_mean)
    batchnorm.moving_variance.assign(batchnorm.moving_variance * 7.0)
    checkpoints.assign_weights(model, checkpoints.read_weights(theta0))  # what the runner's reset does
    np.testing.assert_array_equal(batchnorm.moving_mean.numpy(), initial_mean)
    np.testing.assert_array_equal(batchnorm.moving_variance.numpy(), initial_variance)


# Pruning scopes and rates ----------------------------------------------------


@functools.lru_cache(maxsize=None)
def _cifar10_model(name):
    return models.build(name, (32, 32, 3), 10)  # shared: only its layer names and kinds are read


@pytest.mark.parametrize("flagfile", ["resnet18", "resnet18_rewind", "vgg19", "vgg19_rewind"])
def test_deep_networks_rank_all_convolutions_in_one_group_and_leave_fc_dense(flagfile):
    config = config_from_flagfile(flagfile)
    rates = strategies.weight_rates(_cifar10_model(config.model.model), config.pruning)
    convolutions = tuple(path for path in rates if path != "output/kernel")
    assert len(convolutions) == {"resnet18": 21, "vgg19": 16}[config.model.model]
    assert strategies.groups(rates, config.pruning.pruning_scope) == [(convolutions, 0.2), (("output/kernel",), 0.0)]


def test_global_pruning_keeps_the_largest_magnitudes_across_layers():
    config = config_from_flagfile("resnet18")
    model = models.build(config.model.model, (32, 32, 3), 10, seed=0)
    groups = strategies.groups(strategies.weight_rates(model, config.pruning), config.pruning.pruning_scope)
    kernels = masks.prunable_values(model)
    first = next(iter(kernels))
    kernels[first] = kernels[first] * 1e-4  # a layer of tiny weights: global pruning takes it first
    level1 = strategies.magnitude_masks(kernels, masks.ones_like_model(model), groups, 1)
    assert np.all(level1["output/kernel"] == 1)
    conv = [path for path in kernels if path != "output/kernel"]
    kept = np.concatenate([np.abs(kernels[n])[level1[n] == 1] for n in conv])
    pruned = np.concatenate([np.abs(kernels[n])[level1[n] == 0] for n in conv])
    assert kept.size == strategies.keep_count(kept.size + pruned.size, 0.2, 1)
    assert pruned.max() <= kept.min(), "global pruning keeps the largest magnitudes across all layers"
    densities = masks.weight_densities(level1)
    assert densities[first] == 0.0 and max(densities[n] for n in conv) > 0.8, "not layerwise"
    level2 = strategies.magnitude_masks(kernels, level1, groups, 2)
    assert np.all(level2["output/kernel"] == 1)
    assert sum(int(level2[n].sum()) for n in conv) == strategies.keep_count(kept.size + pruned.size, 0.2, 2)


@pytest.mark.parametrize("flagfile,conv_rate", [
    ("conv2_cifar10", 0.1), ("conv4_dropout_cifar10", 0.1), ("conv6_cifar10", 0.15), ("conv6_dropout_cifar10", 0.15),
])
def test_conv_networks_prune_layerwise_at_the_table_rates(flagfile, conv_rate):
    config = config_from_flagfile(flagfile)
    assert config.pruning.pruning_scope == "layerwise"
    model = models.build(config.model.model, (32, 32, 3), 10, seed=0)
    rates = strategies.weight_rates(model, config.pruning)
    expected = {path: conv_rate for path in rates if path.startswith("conv")}
    expected.update({"fc1/kernel": 0.2, "fc2/kernel": 0.2, "output/kernel": 0.1})  # output at half the FC rate
    assert rates == expected
    groups = strategies.groups(rates, "layerwise")
    level1 = strategies.magnitude_masks(masks.prunable_values(model), masks.ones_like_model(model), groups, 1)
    for name, mask in level1.items():
        assert int(mask.sum()) == strategies.keep_count(mask.size, rates[name], 1), name


# Optimiser and schedules ------------------------------------------------------


def _rates_at(config, iterations):
    iteration = tf.Variable(0, dtype=tf.int64)
    schedule = schedules.from_config(config.training, iteration)
    result = []
    for value in iterations:
        iteration.assign(value)
        result.append(float(schedule()))
    return result


def test_deep_network_schedules_warm_up_then_step_down():
    resnet = config_from_flagfile("resnet18")
    training = resnet.training
    assert (training.optimizer, training.momentum, training.weight_decay) == ("momentum", 0.9, 1e-4)
    optimizer = schedules.make_optimizer(training, schedules.from_config(training, tf.Variable(0, dtype=tf.int64)))
    assert type(optimizer).__name__ == "SGD" and float(optimizer.momentum) == pytest.approx(0.9)
    np.testing.assert_allclose(_rates_at(resnet, [0, 9_999, 19_999, 20_000, 24_999, 25_000, 29_999]),
                               [0.1 / 20_000, 0.05, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)
    vgg = config_from_flagfile("vgg19")
    np.testing.assert_allclose(_rates_at(vgg, [4_999, 9_999, 56_239, 56_240, 84_360]),
                               [0.05, 0.1, 0.1, 0.01, 0.001], rtol=1e-5)
    for name in ("resnet18_rewind", "vgg19_rewind"):
        rewind = config_from_flagfile(name)
        assert rewind.training.warmup_iterations == 0
        assert 0 < rewind.pruning.rewind_iteration < 0.07 * rewind.training.iterations  # the follow-up's range
        assert _rates_at(rewind, [0])[0] == pytest.approx(0.1)


# Augmentation -----------------------------------------------------------------


def _batch(count=6, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0.1, 1.0, size=(count, size, size, 3)).astype(np.float32)


def _is_shifted_crop(output, image, padding=4):
    padded = np.pad(image, [(padding, padding), (padding, padding), (0, 0)])
    height, width = image.shape[:2]
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[dy:dy + height, dx:dx + width]
            if np.array_equal(output, crop) or np.array_equal(output, crop[:, ::-1]):
                return True
    return False


def test_pad_crop_flip_keeps_shape_and_dtype_and_only_shifts_and_flips():
    images = _batch()
    seed = tf.constant([1, 7], tf.int64)
    output = augment.pad_crop_flip(tf.constant(images), seed).numpy()
    assert output.shape == images.shape and output.dtype == np.float32
    assert all(_is_shifted_crop(o, i) for o, i in zip(output, images))
    assert not all(np.array_equal(o, i) for o, i in zip(output, images)), "nothing was augmented"
    np.testing.assert_array_equal(augment.pad_crop_flip(tf.constant(images), seed).numpy(), output)
    other = augment.pad_crop_flip(tf.constant(images), tf.constant([1, 8], tf.int64)).numpy()
    assert not np.array_equal(other, output)


def test_augmentation_is_on_in_training_batches_only():
    images = (_batch(count=16) * 255).astype(np.uint8)
    labels = np.arange(16, dtype=np.int64)  # unique: a batch's labels say which images it holds
    info = data.DatasetInfo("random", (32, 32, 3), 10, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    normalised = (images / 255.0 - np.array(info.mean)) / np.array(info.std)
    plain = pipeline.training_dataset(images, labels, info, batch_size=8, seed=3)
    augmented = pipeline.training_dataset(images, labels, info, batch_size=8, seed=3, augment=augment.pad_crop_flip)
    for (x, y), (ax, ay) in zip(plain.take(2), augmented.take(2)):
        assert ax.shape == x.shape == (8, 32, 32, 3) and ax.dtype == x.dtype == tf.float32
        assert ay.dtype == y.dtype == tf.int64
        np.testing.assert_array_equal(ay.numpy(), y.numpy())  # same examples, same order
        assert not np.allclose(ax.numpy(), x.numpy())
        np.testing.assert_allclose(x.numpy(), normalised[y.numpy()], atol=1e-5)  # per-channel normalisation
    evaluation = np.concatenate([x.numpy() for x, _ in pipeline.evaluation_dataset(images, labels, info, 5)])
    np.testing.assert_allclose(evaluation, normalised, atol=1e-5)  # every image, unaugmented, in order

