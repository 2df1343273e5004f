"""tf.data pipelines over in-memory splits, resumable at any training iteration.

The training stream is an endless sequence of data epochs, each a permutation of
the training set seeded by (data seed, epoch); batches may straddle epochs. Batch
b therefore depends only on (seed, b), and resuming at iteration t just starts the
stream at example t * batch_size. On one replica, without augmentation, the same
stream is drawn in the training loop's own graph (ResidentStream), exactly.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tf_lottery.data.datasets import DatasetInfo


def preprocess_fn(info: DatasetInfo) -> Callable:
    """uint8 images -> float32, normalised per channel with the training split's statistics
    (a language model's character ids and a policy's observations pass as they are)."""
    if info.task != "classification":
        return tf.identity
    mean = tf.constant(info.mean, tf.float32)
    std = tf.constant(info.std, tf.float32)

    def preprocess(images):
        return (tf.cast(images, tf.float32) / 255.0 - mean) / std

    return preprocess


def epoch_order(seed, epoch, n: int) -> tf.Tensor:
    """The training set's order in data epoch `epoch` of the stream seeded by `seed`: a permutation of range(n)."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]))


def training_dataset(
    images: np.ndarray, labels: np.ndarray, info: DatasetInfo, batch_size: int, seed: int,
    start_iteration: int = 0, augment: Optional[Callable] = None, batches_per_step: int = 1,
    num_shards: int = 1, shard_index: int = 0,
) -> tf.data.Dataset:
    """Endless (image, label) batches from `start_iteration` on.

    With several replicas fed by this one pipeline, `batch_size` is the per-replica
    batch and `batches_per_step` the replica count: a step's consecutive batches
    together are exactly the single-replica global batch.

    With `num_shards` pipelines (one per worker) feeding `batches_per_step` replicas
    each, the stream is cut into per-replica batches as if one pipeline fed them
    all, and shard `shard_index` keeps the batches of its own replicas: replica r of
    the whole job gets the same examples as replica r of a single machine.
    """
    n = len(images)
    replicas = batches_per_step * num_shards
    start_example = start_iteration * batch_size * replicas
    start_epoch, offset = divmod(start_example, n)
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    preprocess = preprocess_fn(info)

    def epoch(e):
        return tf.data.Dataset.from_tensor_slices(epoch_order(seed, e, n))

    order = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch).skip(offset)
    batches = order.batch(batch_size, drop_remainder=True).enumerate(start=start_iteration * replicas)
    if num_shards > 1:
        # Only index batches are dropped here: the images are gathered after the filter.
        batches = batches.filter(lambda index, _: (index % replicas) // batches_per_step == shard_index)

    def load_batch(batch_index, indices):
        x = preprocess(tf.gather(images_t, indices))
        if augment is not None:
            x = augment(x, tf.stack([tf.cast(seed, tf.int64) + 1, batch_index]))
        return x, tf.gather(labels_t, indices)

    return batches.map(load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(images: np.ndarray, labels: np.ndarray, info: DatasetInfo, batch_size: int) -> tf.data.Dataset:
    preprocess = preprocess_fn(info)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    # In memory there are no files to shard by: workers split the examples, and
    # summing (loss, correct, count) over replicas counts each example once.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    return dataset.map(lambda x, y: (preprocess(x), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True, eq=False)
class ResidentSplit:
    """An evaluation split preprocessed once and kept on a device, read in `batch_size` slices.

    For one replica: no input pipeline runs at each evaluation, which at a
    LeNet's size costs more than the evaluation itself.
    """

    images: tf.Tensor
    labels: tf.Tensor
    batch_size: int

    @classmethod
    def create(cls, images: np.ndarray, labels: np.ndarray, info: DatasetInfo, batch_size: int,
               device: Optional[str] = None) -> "ResidentSplit":
        with tf.device(device):
            return cls(tf.identity(preprocess_fn(info)(tf.constant(images))),
                       tf.identity(tf.constant(labels, tf.int64)), batch_size)


class ResidentStream:
    """training_dataset's batches without augmentation, for one replica, drawn inside the training loop.

    The preprocessed training split stays on the device; each `next(stream)` (in a
    tf.function) gathers the next batch of the current epoch's order, kept with the
    next epoch's in variables beside the stream position, and moves the position
    on. The orders are those of epoch_order, computed on the CPU as the dataset
    path does, so the batches are the same, bit for bit
    (tests/training/test_resident_stream.py). No input pipeline runs beside the
    step: for a LeNet-sized step on a 2-core CPU it cost a sixth of the step
    (benchmarks/throughput.py).

    The stream is a tf.nest structure (its batch size is static, the rest are
    tensors and variables), so a loop traced for one stream serves every stream of
    the same split and batch size: a run's stream does not retrace it.
    """

    _COMPONENTS = ("images", "labels", "seed", "position", "epoch", "order", "next_order")

    def __init__(self, batch_size: int, images, labels, seed, position, epoch, order, next_order):
        self.batch_size = batch_size
        self.images, self.labels, self.seed = images, labels, seed
        # position: the next batch's first example in the endless stream; order: epoch `epoch`'s.
        self.position, self.epoch, self.order, self.next_order = position, epoch, order, next_order

    @classmethod
    def create(cls, images: tf.Tensor, labels: tf.Tensor, batch_size: int, seed: int,
               start_iteration: int = 0) -> "ResidentStream":
        """The stream of training_dataset(..., batch_size, seed, start_iteration) over `images`, already
        preprocessed (resident_training_data), and `labels`."""
        n = int(images.shape[0])
        if not 0 < batch_size <= n:
            raise ValueError(f"a batch of {batch_size} from {n} training examples")
        position = start_iteration * batch_size
        epoch = position // n
        with tf.device("/cpu:0"):
            def state(value):
                return tf.Variable(value, trainable=False)

            return cls(batch_size, images, labels, tf.constant(seed, tf.int64),
                       state(tf.constant(position, tf.int64)), state(tf.constant(epoch, tf.int64)),
                       state(epoch_order(seed, epoch, n)), state(epoch_order(seed, epoch + 1, n)))

    def __tf_flatten__(self):
        return self.batch_size, tuple(getattr(self, name) for name in self._COMPONENTS)

    @classmethod
    def __tf_unflatten__(cls, batch_size, components):
        return cls(batch_size, *components)

    def _indices(self, count):
        """The stream's next `count` example indices (count <= n), the position and orders moved past them."""
        n = tf.shape(self.order, out_type=tf.int64)[0]
        offset = self.position - self.epoch * n
        take = tf.minimum(count, n - offset)
        # What reaches past the epoch's end continues in the next epoch's order.
        indices = tf.concat([self.order[offset:offset + take], self.next_order[:count - take]], 0)
        with tf.control_dependencies([indices]):
            self.position.assign_add(count)

            def next_epoch():
                self.order.assign(self.next_order)
                self.epoch.assign_add(1)
                with tf.device("/cpu:0"):
                    self.next_order.assign(epoch_order(self.seed, self.epoch + 1, n))
                return tf.constant(True)

            tf.cond(offset + count >= n, next_epoch, lambda: tf.constant(False))
        return indices

    def __next__(self):
        indices = tf.ensure_shape(self._indices(tf.constant(self.batch_size, tf.int64)), [self.batch_size])
        return tf.gather(self.images, indices), tf.gather(self.labels, indices)

    @property
    def max_take(self) -> int:
        """The most batches one `take` gives (an epoch's worth)."""
        return int(self.images.shape[0]) // self.batch_size

    def take(self, steps: int):
        """The next `steps` batches (at most max_take) at once, images [steps, batch, ...] and labels
        [steps, batch, ...]: what `steps` next() calls give, for a loop compiled as a whole."""
        if not 0 < steps <= self.max_take:
            raise ValueError(f"take({steps}): 1 to {self.max_take} batches at a time")
        return _take(self, tf.constant(steps, tf.int64))


@tf.function
def _take(stream: ResidentStream, steps):
    indices = tf.reshape(stream._indices(steps * stream.batch_size), [steps, stream.batch_size])  # pylint: disable=protected-access
    return tf.gather(stream.images, indices), tf.gather(stream.labels, indices)


def resident_training_data(images: np.ndarray, labels: np.ndarray, info: DatasetInfo,
                           device: Optional[str] = None):
    """The training split preprocessed once and kept on `device`, for ResidentStreams."""
    with tf.device(device):
        return tf.identity(preprocess_fn(info)(tf.constant(images))), tf.identity(tf.constant(labels))
