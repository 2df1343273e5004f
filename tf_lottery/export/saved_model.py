"""The dense SavedModel: a plain tf_keras model that serves raw images.

The exported network has its masks folded into the weights and no MaskConstraint
or tf_lottery layer left, so it loads with `tf.saved_model.load` and
`tf_keras.models.load_model` in a process that has never imported tf_lottery.
Its `serving_default` signature takes the task's natural input (tf_lottery.tasks):
images as the dataset stores them (uint8, argument `images`), a language model's
character ids (int32 [batch, n], `tokens`; dataset.json's vocabulary names them) or
a policy's observations (float32, `observations`), and returns logits and
probabilities (per position for a language model, per action for a policy); the
metadata travels as an asset.
"""

import json
import os
import shutil
import tempfile
from typing import Dict, List

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery.export.source import ExportError, TrainedRun
from tf_lottery.models.conv import SeededDropout
from tf_lottery.pruning import constraint, prunable

METADATA_FILE = "tf_lottery_metadata.json"
SIGNATURE = "serving_default"
INPUT_NAME = "images"
# Each task's serving input: (argument name, dtype).
TASK_INPUTS = {"classification": (INPUT_NAME, tf.uint8), "language_model": ("tokens", tf.int32),
               "reinforcement": ("observations", tf.float32)}
# Layers of tf_lottery replaced by the tf_keras layer that computes the same at inference.
_PLAIN_EQUIVALENTS = {SeededDropout: lambda layer: keras.layers.Dropout(layer.rate, name=layer.name)}


def _plain_layer(layer):
    if isinstance(layer, keras.Model):
        return keras.models.clone_model(layer, clone_function=_plain_layer)
    if type(layer) in _PLAIN_EQUIVALENTS:
        return _PLAIN_EQUIVALENTS[type(layer)](layer)
    if type(layer).__module__.startswith("tf_lottery"):
        raise ExportError(f"layer {layer.name} ({type(layer).__name__}) has no plain tf_keras equivalent to export")
    config = constraint.without_masks(layer.get_config())
    # A mixed-precision run still exports a float32 network: its variables are float32 anyway.
    config["dtype"] = "float32"
    return type(layer).from_config(config)


def folded_weights(layer) -> List[np.ndarray]:
    """A layer's weights without its mask variables, each mask multiplied into its weight."""
    masks = {id(w.variable): w.mask for w in prunable.layer_weights(layer)}
    mask_ids = {id(mask) for c in constraint.mask_constraints(layer) for mask in c.masks}
    values = []
    for weight in layer.weights:
        if id(weight) in mask_ids:
            continue
        value = weight.numpy()
        if id(weight) in masks:
            value = value * masks[id(weight)].numpy()
        values.append(value)
    return values


def plain_model(model) -> keras.Model:
    """A copy of a masked functional model with masks folded in and constraints stripped."""
    clone = keras.models.clone_model(model, clone_function=_plain_layer)
    for layer, copy in zip(constraint.walk_layers(model), constraint.walk_layers(clone)):
        if type(layer) in _PLAIN_EQUIVALENTS:
            continue  # inference-time equivalents carry no state (SeededDropout's call counter)
        copy.set_weights(folded_weights(layer))
    return clone


def preprocessing_layer(run: TrainedRun) -> keras.layers.Layer:
    """(uint8 / 255 - mean) / std as one affine tf_keras layer: x * scale + offset, per channel."""
    info = run.experiment.dataset
    mean, std = np.asarray(info.mean, np.float64), np.asarray(info.std, np.float64)
    return keras.layers.Rescaling(scale=(1.0 / (255.0 * std)).tolist(), offset=(-mean / std).tolist(),
                                  name="preprocess")


def task_input(info) -> tuple:
    """(argument name, dtype) of the serving input of a dataset's task."""
    return TASK_INPUTS[getattr(info, "task", "") or "classification"]


def serving_model(run: TrainedRun) -> keras.Model:
    """uint8 images as the dataset stores them -> logits, with the preprocessing inside; a language
    model's character ids or a policy's observations -> logits, as the network takes them."""
    info = run.experiment.dataset
    name, dtype = task_input(info)
    inputs = keras.Input(shape=info.input_shape, dtype=dtype.name, name=name)
    network = plain_model(run.model)
    logits = network(preprocessing_layer(run)(inputs) if name == INPUT_NAME else inputs)
    return keras.Model(inputs, logits, name=f"{network.name}_serving")


def input_spec(run: TrainedRun) -> tf.TensorSpec:
    name, dtype = task_input(run.experiment.dataset)
    return tf.TensorSpec([None, *run.experiment.dataset.input_shape], dtype, name=name)


def make_serve_function(logits_fn, spec: tf.TensorSpec):
    """A tf.function images -> {'logits', 'probabilities'} around `logits_fn`."""

    @tf.function(input_signature=[spec])
    def serve(images):
        logits = tf.cast(logits_fn(images), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    return serve


def write_metadata(directory: str, metadata: Dict) -> str:
    path = os.path.join(directory, METADATA_FILE)
    with open(path, "w") as f:
        json.dump(metadata, f, indent=2, sort_keys=True, default=float)
    return path


def replace_directory(tmp: str, path: str):
    """Moves a finished export into place, replacing an older one at `path`."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
    os.replace(tmp, path)


def saving_to(path: str):
    """A fresh temporary directory beside `path` (same filesystem, so the final rename is atomic)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)


def export_saved_model(run: TrainedRun, path: str, metadata: Dict) -> keras.Model:
    """Writes the dense SavedModel of `run` to `path`; returns the serving model it saved."""
    model = serving_model(run)
    serve = make_serve_function(lambda images: model(images, training=False), input_spec(run))
    staging = saving_to(path)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            # Tracked as an attribute, the asset is copied into the SavedModel's assets/.
            model.tf_lottery_metadata = tf.saved_model.Asset(write_metadata(scratch, metadata))
            target = os.path.join(staging, "model")
            logger, level = tf.get_logger(), tf.get_logger().level
            logger.setLevel("ERROR")  # saving an uncompiled model warns that its metrics are not built
            try:
                model.save(target, save_format="tf", include_optimizer=False,
                           signatures={SIGNATURE: serve.get_concrete_function()})
            finally:
                logger.setLevel(level)
        replace_directory(target, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model


def directory_bytes(path: str, subdirectory: str = "") -> int:
    """Total size of the files under `path` (or its `subdirectory`, e.g. 'variables')."""
    root = os.path.join(path, subdirectory)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)
