"""tf.data pipelines over in-memory splits, resumable at any training iteration.

The training stream is an endless sequence of data epochs, each a permutation of
the training set seeded by (data seed, epoch); batches may straddle epochs. Batch
b therefore depends only on (seed, b), and resuming at iteration t just starts the
stream at example t * batch_size.
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
        return tf.data.Dataset.from_tensor_slices(
            tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), e]))
        )

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
