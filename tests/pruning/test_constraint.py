"""Pruned weights stay exactly 0.0 after every optimizer step and every reset."""

import numpy as np
import pytest
import tensorflow as tf

from tf_lottery import models
from tf_lottery.config import ExperimentConfig
from tf_lottery.pruning import constraint, masks, strategies
from tf_lottery.training.loop import Trainer


def _random_batches(count, batch=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count * batch, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=count * batch).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()


def _pruned_model(density=0.3, seed=0):
    model = models.build("mlp", (28, 28, 1), 10, seed=seed, hidden_units=(24,))
    rates = {name: 1 - density for name in masks.get_masks(model)}
    pruned = strategies.magnitude_masks(masks.get_kernels(model), masks.ones_like_model(model),
                                        strategies.groups(rates, "layerwise"), 1)
    masks.apply_masks(model, pruned)
    return model, pruned


@pytest.mark.parametrize("optimizer,weight_decay", [("adam", 0.0), ("momentum", 0.0), ("sgd", 1e-2), ("adam", 1e-2)])
def test_pruned_weights_stay_exactly_zero(optimizer, weight_decay):
    model, pruned = _pruned_model()
    before = masks.get_kernels(model)
    config = ExperimentConfig().replace(optimizer=optimizer, learning_rate=0.05, weight_decay=weight_decay)
    trainer = Trainer(tf.distribute.get_strategy(), model, config.training, 32)
    trainer.train(iter(_random_batches(4)), 25)
    for name, kernel in masks.get_kernels(model).items():
        mask = pruned[name]
        assert np.all(kernel[mask == 0] == 0.0), f"{optimizer}: pruned weights of {name} moved"
        assert not np.allclose(kernel[mask == 1], before[name][mask == 1]), f"{optimizer}: survivors did not train"


def test_apply_masks_zeroes_kernels_and_sets_mask_variables():
    model = models.build("mlp", (28, 28, 1), 10, seed=1, hidden_units=(8,))
    ones = masks.ones_like_model(model)
    half = {name: (np.arange(m.size).reshape(m.shape) % 2).astype(np.float32) for name, m in ones.items()}
    masks.apply_masks(model, half)
    for layer in constraint.prunable_layers(model):
        np.testing.assert_array_equal(layer.kernel_constraint.mask.numpy(), half[layer.name])
        assert np.all(layer.kernel.numpy()[half[layer.name] == 0] == 0.0)
    assert masks.density(masks.get_masks(model)) == pytest.approx(0.5, abs=1e-3)


def test_masks_are_non_trainable_and_only_on_kernels():
    model = models.build("lenet300_100", (28, 28, 1), 10, seed=0)
    mask_ids = {id(v) for v in constraint.mask_variables(model)}
    assert len(mask_ids) == 3
    assert not mask_ids & {id(v) for v in model.trainable_variables}
    assert [layer.name for layer in constraint.prunable_layers(model)] == ["fc1", "fc2", "output"]
    assert all(layer.bias_constraint is None for layer in constraint.prunable_layers(model))
    assert sum(int(np.prod(v.shape)) for v in constraint.model_weights(model)) == 266_610


def test_apply_masks_rejects_masks_of_another_model():
    model = models.build("mlp", (28, 28, 1), 10, hidden_units=(8,))
    with pytest.raises(ValueError, match="do not match"):
        masks.apply_masks(model, {"fc1": np.ones((784, 8))})
