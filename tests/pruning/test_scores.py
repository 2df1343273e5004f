"""Pruning-at-initialisation scores against a few lines of plain TensorFlow on a tiny MLP: SNIP,
GraSP (by an explicit Hessian) and SynFlow; the model's weights and masks are left as they were."""

import numpy as np
import pytest
import tensorflow as tf

from tf_lottery import models
from tf_lottery.pruning import constraint, strategies
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.pruning import scores

SHAPE, CLASSES = (4, 4, 1), 3
PATHS = ("fc1/kernel", "output/kernel")


@pytest.fixture
def model():
    return models.build("mlp", SHAPE, CLASSES, seed=3, hidden_units=(5,))


@pytest.fixture
def batches():
    rng = np.random.default_rng(0)
    return [(tf.constant(rng.normal(size=(8, *SHAPE)), tf.float32), tf.constant(rng.integers(0, CLASSES, 8)))
            for _ in range(2)]


def weights(model):
    """(W1, b1, W2, b2) as tensors."""
    return [tf.constant(v.numpy()) for v in constraint.model_weights(model)]


def forward(images, w1, b1, w2, b2, temperature=1.0):
    hidden = tf.nn.relu(tf.reshape(images, [tf.shape(images)[0], -1]) @ w1 + b1)
    return (hidden @ w2 + b2) / temperature


def loss(labels, logits):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * float(np.max(np.abs(want))))


@pytest.fixture
def unchanged(model):
    """Checks, after the test, that the model's weights and masks are what they were before it."""
    before, masks = [v.numpy() for v in model.weights], masks_lib.get_masks(model)
    yield
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.name)
    assert all(np.array_equal(masks_lib.get_masks(model)[p], m) for p, m in masks.items())


def test_snip_is_the_gradient_with_respect_to_all_ones_masks(model, batches, unchanged):
    w1, b1, w2, b2 = weights(model)
    m1, m2 = tf.Variable(tf.ones_like(w1)), tf.Variable(tf.ones_like(w2))
    total = [0.0, 0.0]
    for images, labels in batches:
        with tf.GradientTape() as tape:
            value = loss(labels, forward(images, w1 * m1, b1, w2 * m2, b2))
        total = [t + g for t, g in zip(total, tape.gradient(value, [m1, m2]))]
    got = scores.snip(model, iter(batches))
    assert tuple(got) == PATHS
    for path, want in zip(PATHS, total):
        close(got[path], np.abs(want.numpy()))


def test_grasp_is_theta_times_the_hessian_times_the_gradient(model, batches, unchanged):
    w1, b1, w2, b2 = weights(model)
    flat = tf.Variable(tf.concat([tf.reshape(w1, [-1]), tf.reshape(w2, [-1])], 0))

    def total_loss():  # Σ_b loss_b(logits / 200) of the flattened prunable weights
        split = w1.shape.num_elements()
        k1, k2 = tf.reshape(flat[:split], w1.shape), tf.reshape(flat[split:], w2.shape)
        return tf.add_n([loss(labels, forward(images, k1, b1, k2, b2, 200.0)) for images, labels in batches])

    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            value = total_loss()
        gradient = inner.gradient(value, flat)
    hessian = outer.jacobian(gradient, flat)  # the explicit Hessian, 95 x 95
    want = (flat * tf.linalg.matvec(hessian, gradient)).numpy()
    got = scores.grasp(model, batches, temperature=200.0)
    close(np.concatenate([got[p].reshape(-1) for p in PATHS]), want)
    assert np.any(want < 0) and np.any(want > 0), "signed: kept highest, never made absolute"


def test_synflow_is_the_flow_of_the_absolute_network_on_an_all_ones_input(model, unchanged):
    w1, b1, w2, b2 = (tf.Variable(tf.abs(w)) for w in weights(model))
    with tf.GradientTape() as tape:
        flow = tf.reduce_sum(forward(tf.ones([1, *SHAPE]), w1, b1, w2, b2))
    want = [np.abs((g * w).numpy()) for g, w in zip(tape.gradient(flow, [w1, w2]), [w1, w2])]
    got = scores.synflow(model)
    for path, expected in zip(PATHS, want):
        close(got[path], expected)
    assert all(np.all(s > 0) for s in got.values()), "every weight of an |θ| ReLU net carries flow"


def test_synflow_masks_prune_over_rounds_to_exactly_the_levels_counts(model, unchanged):
    group_list = strategies.groups({p: 0.5 for p in PATHS}, "layerwise")
    once = scores.synflow_masks(model, group_list, 3, rounds=1)
    assert all(np.array_equal(once[p], m) for p, m in strategies.ranked_masks(
        scores.synflow(model), masks_lib.ones_like_model(model), group_list, 3).items()), "one round is one-shot"
    iterated = scores.synflow_masks(model, group_list, 3, rounds=10)
    assert masks_lib.counts(iterated) == {p: strategies.keep_count(m.size, 0.5, 3) for p, m in once.items()}
    inverted = scores.synflow_masks(model, group_list, 3, rounds=1, invert=True)
    flow = scores.synflow(model)
    for path in PATHS:  # inverted keeps the lowest flows
        assert flow[path][inverted[path] > 0].max() <= flow[path][inverted[path] == 0].min()


def test_synflow_reads_no_data_and_magnitude_and_random_are_plain(model, monkeypatch, unchanged):
    from tf_lottery import data  # pylint: disable=import-outside-toplevel
    from tf_lottery.data import pipeline  # pylint: disable=import-outside-toplevel

    def refuse(*args, **kwargs):
        raise AssertionError("synflow read data")

    monkeypatch.setattr(data, "load", refuse)
    monkeypatch.setattr(pipeline, "training_dataset", refuse)
    scores.synflow_masks(model, strategies.groups({p: 0.5 for p in PATHS}, "global"), 1, rounds=2)
    values = masks_lib.prunable_values(model)
    assert all(np.array_equal(scores.magnitude(model)[p], np.abs(v)) for p, v in values.items())
    a, b, c = scores.random(model, 1), scores.random(model, 1), scores.random(model, 2)
    assert all(np.array_equal(a[p], b[p]) and not np.array_equal(a[p], c[p]) for p in PATHS)
