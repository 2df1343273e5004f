"""Standard CIFAR augmentation with stateless randomness: pad 4, random crop, flip.

Stateless ops seeded per batch make the augmentation of batch b the same in a run
and in its resumption.
"""

import tensorflow as tf


def pad_crop_flip(images, seed, padding: int = 4):
    """Randomly shifts (by up to `padding` pixels, zero-filled) and horizontally flips a batch."""
    shape = tf.shape(images)
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    offsets = tf.random.stateless_uniform([shape[0], 2], seeds[0], 0, 2 * padding + 1, dtype=tf.int32)

    def crop(args):
        image, offset = args
        return tf.slice(image, [offset[0], offset[1], 0], [height, width, -1])

    cropped = tf.map_fn(crop, (padded, offsets), fn_output_signature=images.dtype)
    flip = tf.random.stateless_uniform([shape[0], 1, 1, 1], seeds[1]) < 0.5
    return tf.where(flip, tf.reverse(cropped, axis=[2]), cropped)
