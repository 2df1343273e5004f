"""The resident training stream: training_dataset's batches bit for bit, across epochs and
resumption points, one at a time or a chunk at once, and runs trained on it (with XLA, a chunk
in one compiled loop) equal to runs trained on the dataset."""

import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import small_config
from stop_hook import train_dense
from tf_lottery.data import DatasetInfo, pipeline
from tf_lottery.experiment.results import read_metrics
from tf_lottery.training import workbench


@tf.function
def _draw(stream, steps):
    images, labels = tf.TensorArray(tf.float32, size=steps), tf.TensorArray(tf.int64, size=steps)
    for i in tf.range(steps):
        x, y = next(stream)
        images, labels = images.write(i, x), labels.write(i, y)
    return images.stack(), labels.stack()


def _expected(images, labels, info, batch, seed, start, count):
    dataset = pipeline.training_dataset(images, labels, info, batch, seed, start_iteration=start)
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def _drawn(images, labels, info, batch, seed, start, chunks):
    """Batches drawn by next() in a loop and by take(), in turns: one stream, as the engine reads it."""
    stream = pipeline.ResidentStream.create(*pipeline.resident_training_data(images, labels, info), batch, seed, start)
    drawn = []
    for i, chunk in enumerate(chunks):  # several calls: the position and the epochs' orders carry over
        x, y = _draw(stream, tf.constant(chunk)) if i % 2 == 0 else stream.take(chunk)
        drawn += list(zip(x.numpy(), y.numpy()))
    return drawn


def test_the_stream_gives_the_datasets_batches_bit_for_bit():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(130, 5, 5, 1), dtype=np.uint8)  # a batch of 60 straddles most epochs
    labels = rng.integers(0, 10, size=130).astype(np.int64)
    info = DatasetInfo("random", (5, 5, 1), 10, (0.3,), (0.2,))
    traces = _draw.experimental_get_tracing_count()
    for seed, start in ((1, 0), (7, 2), (3, 11), (5, 29)):  # 29 * 60 = 13.4 epochs in
        expected = _expected(images, labels, info, 60, seed, start, 20)
        drawn = _drawn(images, labels, info, 60, seed, start, (3, 2, 1, 2, 9, 1, 2))  # take: at most 2
        assert len(drawn) == len(expected) == 20
        for (x, y), (dx, dy) in zip(expected, drawn):
            assert x.dtype == dx.dtype and x.tobytes() == dx.tobytes() and np.array_equal(y, dy)
    # Every stream of the split is one trace of the loop reading it: a new run does not retrace.
    assert _draw.experimental_get_tracing_count() - traces <= 1
    with pytest.raises(ValueError, match=r"take\(3\): 1 to 2 batches"):
        pipeline.ResidentStream.create(*pipeline.resident_training_data(images, labels, info), 60, 1).take(3)
    with pytest.raises(ValueError, match="a batch of 200 from 130"):
        pipeline.ResidentStream.create(*pipeline.resident_training_data(images, labels, info), 200, 1)


@pytest.mark.parametrize("jit_compile,strategy", [("off", None), ("on", None), ("off", "one_device")])
def test_a_run_on_the_stream_equals_it_on_the_dataset(tmp_path, monkeypatch, jit_compile, strategy):
    # one_device: the strategy a machine with one GPU gets, here on the CPU
    created, taken = [], []
    original, take = pipeline.ResidentStream.create, pipeline.ResidentStream.take
    monkeypatch.setattr(pipeline.ResidentStream, "create",
                        classmethod(lambda cls, *a, **k: created.append(1) or original(*a, **k)))
    monkeypatch.setattr(pipeline.ResidentStream, "take", lambda self, steps: taken.append(steps) or take(self, steps))
    # 100 steps of 32 from 55,000 examples stay in epoch 0: a small validation set makes it 1.4 epochs.
    config = small_config(tmp_path, iterations=100, eval_every=25, checkpoint_every=50, jit_compile=jit_compile,
                          validation_size=57800)
    runs = {}
    for name, resident_bytes in (("resident", workbench.RESIDENT_TRAINING_BYTES), ("dataset", 0)):
        monkeypatch.setattr(workbench, "RESIDENT_TRAINING_BYTES", resident_bytes)
        root = os.path.join(tmp_path, name)
        result = train_dense(config, root, "run", seed=3, data_seed=2,
                             strategy=tf.distribute.OneDeviceStrategy("/cpu:0") if strategy else None)
        with np.load(os.path.join(root, "run", "final_weights.npz")) as values:
            weights = {k: values[k] for k in values.files}
        runs[name] = (result, read_metrics(os.path.join(root, "run", "metrics.csv")), weights)
    assert len(created) == 1  # the first run read the resident stream, the second the dataset
    # With XLA the run trained chunk by chunk (25 steps between evaluations), each chunk one compiled loop.
    assert taken == ([25] * 4 if jit_compile == "on" else [])
    (result, rows, weights), (result_d, rows_d, weights_d) = runs["resident"], runs["dataset"]
    assert rows == rows_d and result["early_stop_iteration"] == result_d["early_stop_iteration"]
    assert weights.keys() == weights_d.keys()
    for key in weights:
        assert weights[key].tobytes() == weights_d[key].tobytes(), key
