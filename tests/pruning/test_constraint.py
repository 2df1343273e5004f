"""Pruned weights stay exactly 0.0 after every optimizer step and every reset."""

import numpy as np
import pytest
import tensorflow as tf

from tf_lottery import models
from tf_lottery.config import ExperimentConfig
from tf_lottery.errors import RunError
from tf_lottery.pruning import constraint, masks, prunable, strategies
from tf_lottery.training.loop import Trainer


def _random_batches(count, batch=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count * batch, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=count * batch).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()


def _pruned_model(density=0.3, seed=0):
    model = models.build("mlp", (28, 28, 1), 10, seed=seed, hidden_units=(24,))
    rates = {name: 1 - density for name in masks.get_masks(model)}
    pruned = strategies.magnitude_masks(masks.prunable_values(model), masks.ones_like_model(model),
                                        strategies.groups(rates, "layerwise"), 1)
    masks.apply_masks(model, pruned)
    return model, pruned


@pytest.mark.parametrize("optimizer,weight_decay,jit", [
    ("adam", 0.0, False), ("momentum", 0.0, False), ("sgd", 1e-2, False), ("adam", 1e-2, False),
    ("momentum", 0.0, True), ("adam", 1e-2, True)])
def test_pruned_weights_stay_exactly_zero(optimizer, weight_decay, jit):
    model, pruned = _pruned_model()
    before = masks.prunable_values(model)
    config = ExperimentConfig().replace(optimizer=optimizer, learning_rate=0.05, weight_decay=weight_decay)
    trainer = Trainer(tf.distribute.get_strategy(), model, config.training, 32, jit_compile=jit)
    assert trainer.jit_compile == jit
    trainer.train(iter(_random_batches(4)), 25)
    for name, kernel in masks.prunable_values(model).items():
        mask = pruned[name]
        assert np.all(kernel[mask == 0] == 0.0), f"{optimizer}: pruned weights of {name} moved"
        assert not np.allclose(kernel[mask == 1], before[name][mask == 1]), f"{optimizer}: survivors did not train"


def test_apply_masks_zeroes_kernels_and_sets_mask_variables():
    model = models.build("mlp", (28, 28, 1), 10, seed=1, hidden_units=(8,))
    ones = masks.ones_like_model(model)
    half = {name: (np.arange(m.size).reshape(m.shape) % 2).astype(np.float32) for name, m in ones.items()}
    masks.apply_masks(model, half)
    for weight in prunable.prunable_weights(model):
        np.testing.assert_array_equal(weight.mask.numpy(), half[weight.path])
        assert np.all(weight.variable.numpy()[half[weight.path] == 0] == 0.0)
    assert masks.density(masks.get_masks(model)) == pytest.approx(0.5, abs=1e-3)


def test_masks_are_non_trainable_and_only_on_kernels():
    model = models.build("lenet300_100", (28, 28, 1), 10, seed=0)
    mask_ids = {id(v) for v in constraint.mask_variables(model)}
    assert len(mask_ids) == 3
    assert not mask_ids & {id(v) for v in model.trainable_variables}
    weights = prunable.prunable_weights(model)
    assert [w.path for w in weights] == ["fc1/kernel", "fc2/kernel", "output/kernel"]
    assert [w.mask.name for w in weights] == ["kernel_mask:0"] * 3  # the name older checkpoints hold
    assert all(w.layer.bias_constraint is None for w in weights)
    assert sum(int(np.prod(v.shape)) for v in constraint.model_weights(model)) == 266_610


def test_apply_masks_rejects_masks_of_another_model_in_one_line():
    model = models.build("mlp", (28, 28, 1), 10, hidden_units=(8,))
    with pytest.raises(RunError, match="do not match") as error:
        masks.apply_masks(model, {"fc1/kernel": np.ones((784, 8))})
    assert "\n" not in str(error.value)
    wrong_shape = {**masks.ones_like_model(model), "fc1/kernel": np.ones((784, 9))}
    with pytest.raises(RunError, match="fc1/kernel has shape"):
        masks.apply_masks(model, wrong_shape)
    assert masks.density(masks.get_masks(model)) == 1.0, "a rejected mask set changes nothing"


def _trained(jit, steps=30):
    model, _ = _pruned_model(seed=3)
    config = ExperimentConfig().replace(optimizer="adam", learning_rate=1e-3)
    trainer = Trainer(tf.distribute.get_strategy(), model, config.training, 32, jit_compile=jit)
    trainer.train(iter(_random_batches(4, seed=5)), steps)
    return trainer, [v.numpy() for v in constraint.model_weights(model)]


def test_xla_steps_train_the_same_network_as_plain_steps_and_repeat_exactly():
    (plain, plain_weights), (xla, xla_weights), (_, again) = _trained(False), _trained(True), _trained(True)
    assert xla.jit_compile and not plain.jit_compile
    for a, b, c in zip(plain_weights, xla_weights, again):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # float32 reassociation only
        assert np.array_equal(b, c), "XLA on the CPU gives the same numbers twice"
        assert np.array_equal(a == 0, b == 0), "the same weights are zero"
    batches = _random_batches(2, seed=6).take(2)
    np.testing.assert_allclose(xla.evaluate(batches)["loss"], plain.evaluate(batches)["loss"], rtol=1e-4)


def test_a_model_xla_cannot_compile_trains_without_it_after_one_warning(caplog):
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    inputs = keras.Input((28, 28, 1))
    # numpy_function runs Python: XLA has no kernel for it.
    x = keras.layers.Lambda(lambda t: tf.ensure_shape(tf.numpy_function(lambda a: a, [t], tf.float32, stateful=False),
                                                      t.shape))(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="output")(x), name="uncompilable")
    config = ExperimentConfig().replace(optimizer="sgd", learning_rate=0.01)
    with caplog.at_level("WARNING", logger="tf_lottery"):
        trainer = Trainer(tf.distribute.get_strategy(), model, config.training, 32, jit_compile=True)
    assert not trainer.jit_compile
    assert [r.getMessage() for r in caplog.records if "XLA cannot compile model uncompilable" in r.getMessage()]
    trainer.train(iter(_random_batches(2)), 3)
    assert int(trainer.iteration.numpy()) == 3


def test_auto_compiles_long_runs_of_models_without_convolutions_on_one_cpu_device_only():
    from tf_lottery.training.loop import AUTO_MIN_ITERATIONS, use_xla  # pylint: disable=import-outside-toplevel

    default, mlp = tf.distribute.get_strategy(), _pruned_model()[0]
    assert use_xla("auto", default, AUTO_MIN_ITERATIONS, mlp) == (not tf.config.list_logical_devices("GPU"))
    assert not use_xla("auto", default, AUTO_MIN_ITERATIONS - 1, mlp), "compilation would cost more than it saves"
    conv = models.build("conv2", (32, 32, 3), 10, seed=0)
    assert not use_xla("auto", default, 10**6, conv), "convolutions ran slower under XLA on the CPU"
    assert use_xla("on", default, 10, conv) and not use_xla("off", default, 10**6, mlp)
    two = type("TwoReplicas", (), {"num_replicas_in_sync": 2})()
    assert not use_xla("auto", two, 10**6, mlp), "several replicas: not measured, so not compiled"
