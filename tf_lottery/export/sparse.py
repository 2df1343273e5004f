"""The sparse SavedModel: pruned weights stored as their survivors, so the file shrinks with density.

Each pruned weight (a kernel, an embedding table, a recurrent kernel ...) is
saved as its surviving values plus their positions, in whichever of two
encodings is smaller: int32 flat indices (4 bytes a survivor, smaller below 1/32
density) or a bitmap (one bit per weight). A weight whose compact form would not
be smaller than itself (nothing or little pruned) stays a plain dense variable.

Serving rebuilds the dense weights once, when the SavedModel is loaded: each
is a resource whose initializer scatters the survivors into a dense
tensor, run by `tf.saved_model.load` and by TF1-style loaders (TF Serving) alike.
Calls then run the same dense matmuls and convolutions as the dense export, so
outputs are bit-identical to it and latency is the dense latency; this beat
computing with tf.sparse ops on every call (benchmarks/README.md, "Export").
"""

import math
import os
import shutil
import tempfile
from typing import Dict

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context  # anonymous_name(): the only spelling of "a fresh resource"

from tf_lottery.export import saved_model as dense_export
from tf_lottery.export.source import TrainedRun
from tf_lottery.pruning import prunable

_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)  # np.packbits' default (big-endian) bit order


def encoding_for(size: int, survivors: int) -> str:
    """'positions', 'bitmap' or 'dense': the smallest way to store a kernel with `survivors` of `size` left."""
    positions, bitmap, dense = 4 * survivors, math.ceil(size / 8), 4 * size
    if 4 * survivors + min(positions, bitmap) >= dense:
        return "dense"
    return "positions" if positions < bitmap else "bitmap"


class DenseKernel(tf.saved_model.experimental.TrackableResource):
    """A dense weight rebuilt from its compact encoding when the SavedModel loads."""

    def __init__(self, name: str, shape, values: tf.Variable, encoded: tf.Variable, encoding: str):
        self._name, self._shape = name, [int(d) for d in shape]
        self._values, self._encoded, self._encoding = values, encoded, encoding
        super().__init__()
        self._initialize()

    def _create_resource(self):
        # Eagerly (while exporting) the variable is anonymous, so exports in one process
        # never share kernels. Saved graphs need a name unique within the model: the
        # TF2 loader suffixes it per load (`_load_<n>`), a TF1 session scopes it.
        if tf.executing_eagerly():
            shared_name = context.anonymous_name()
        else:
            shared_name = f"tf_lottery_dense_kernel/{self._name}"
        return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=self._shape, shared_name=shared_name)

    def _initialize(self):
        size = int(np.prod(self._shape))
        if self._encoding == "bitmap":
            bits = tf.bitwise.bitwise_and(self._encoded[:, tf.newaxis], tf.constant(_BIT_WEIGHTS, tf.uint8)) > 0
            positions = tf.where(tf.reshape(bits, [-1])[:size])
        else:
            positions = tf.cast(self._encoded, tf.int64)[:, tf.newaxis]
        dense = tf.reshape(tf.scatter_nd(positions, self._values, [size]), self._shape)
        return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=dense)

    def read(self):
        value = tf.raw_ops.ReadVariableOp(resource=self.resource_handle, dtype=tf.float32)
        if not tf.executing_eagerly():
            # A raw read has no static shape; without one tf.matmul picks the slower BatchMatMulV2.
            value.set_shape(self._shape)
        return value


def encode(kernel: np.ndarray, mask: np.ndarray, encoding: str):
    """(survivor values float32, positions int32 or bitmap uint8) of a kernel; the mask says who survives."""
    alive = np.asarray(mask).reshape(-1) > 0
    values = np.asarray(kernel, np.float32).reshape(-1)[alive]
    if encoding == "bitmap":
        return values, np.packbits(alive.astype(np.uint8))
    return values, np.flatnonzero(alive).astype(np.int32)


class SparseServing(tf.Module):
    """What the sparse SavedModel tracks: compact weights, the other weights, metadata and `serve`."""

    def __init__(self, run: TrainedRun, metadata_path: str):
        super().__init__(name="sparse_serving")
        model = dense_export.serving_model(run)  # in a closure, not an attribute: its pruned weights must not be saved
        slots = prunable.slots_by_path(model)
        swapped, self.encodings = {}, {}
        self.kernel_values, self.kernel_positions, self.kernels = [], [], []
        for path, mask in run.masks.items():
            encoding = encoding_for(mask.size, int(np.count_nonzero(mask)))
            self.encodings[path] = encoding
            if encoding == "dense":
                continue
            slot = slots[path]
            weight = getattr(slot.owner, slot.attribute)
            name = path.replace("/", "_")  # 'fc1/kernel': variables fc1_kernel_values, fc1_kernel_bitmap
            values, encoded = encode(weight.numpy(), mask, encoding)
            values = tf.Variable(values, trainable=False, name=f"{name}_values")
            encoded = tf.Variable(encoded, trainable=False, name=f"{name}_{encoding}")
            kernel = DenseKernel(path, weight.shape, values, encoded, encoding)
            self.kernel_values.append(values)
            self.kernel_positions.append(encoded)
            self.kernels.append(kernel)
            swapped[path] = (slot, weight, kernel)
        replaced = {id(weight) for _, weight, _ in swapped.values()}
        self.weights_kept = [w for w in model.weights if id(w) not in replaced]
        self.tf_lottery_metadata = tf.saved_model.Asset(metadata_path)

        def logits(images):
            # The layers read `owner.<attribute>` ('kernel', 'embeddings' ...); pointing it at the
            # rebuilt tensor while the function is traced keeps the original variables out of the graph.
            try:
                for slot, _, kernel in swapped.values():
                    object.__setattr__(slot.owner, slot.attribute, kernel.read())
                return model(images, training=False)
            finally:
                for slot, weight, _ in swapped.values():
                    object.__setattr__(slot.owner, slot.attribute, weight)

        self.serve = dense_export.make_serve_function(logits, dense_export.input_spec(run))


def export_sparse_saved_model(run: TrainedRun, path: str, metadata: Dict) -> Dict[str, str]:
    """Writes the sparse SavedModel of `run` to `path`; returns {weight path: encoding}."""
    staging = dense_export.saving_to(path)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            module = SparseServing(run, dense_export.write_metadata(scratch, metadata))
            target = os.path.join(staging, "model")
            tf.saved_model.save(module, target, signatures={dense_export.SIGNATURE: module.serve.get_concrete_function()})
        dense_export.replace_directory(target, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dict(module.encodings)
