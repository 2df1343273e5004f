"""TFLite export with the converter's sparsity optimisation, optionally quantised.

The converter is given the same serving function as the SavedModels (uint8 images
in, logits and probabilities out), with Optimize.EXPERIMENTAL_SPARSITY so pruned
kernels are stored in TFLite's sparse format. `quantize`:
  none     float32 weights; outputs must match the dense model within 1e-4.
  dynamic  int8 weights, float activations (dynamic range quantisation); with
           sparse kernels XNNPACK refuses these, so run them with
           experimental_op_resolver_type=BUILTIN_WITHOUT_DEFAULT_DELEGATES.
  int8     int8 weights and activations, calibrated on a representative set drawn
           from the training split; top-1 agreement with the dense model on the
           test set is measured and reported.
"""

import os
import warnings
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from tf_lottery.export.saved_model import SIGNATURE
from tf_lottery.export.source import ExportCheckError, ExportError
from tf_lottery.utils import atomic_path

QUANTIZATIONS = ("none", "dynamic", "int8")
FLOAT_TOLERANCE = 1e-4


def convert(serve, model, quantize: str = "none", representative_images: Optional[np.ndarray] = None) -> bytes:
    """The TFLite flatbuffer of the tf.function `serve` (whose variables `model` holds)."""
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"--quantize: expected one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if quantize != "none":
        converter.optimizations.append(tf.lite.Optimize.DEFAULT)
    if quantize == "int8":
        if representative_images is None or not len(representative_images):
            raise ExportError("--quantize=int8 needs representative images from the training split")

        def representative():
            for image in representative_images:
                yield [image[np.newaxis]]

        converter.representative_dataset = representative
        # Integer kernels only: conversion fails rather than leave a float op behind.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return converter.convert()
    except Exception as error:  # the converter raises ConverterError and plain exceptions alike
        raise ExportError(f"TFLite conversion failed: {(str(error).strip().splitlines() or [repr(error)])[0]}") from None


def interpreter(model_path: str, num_threads: Optional[int] = None, default_delegates: bool = True):
    """A TFLite interpreter (tf.lite's; its deprecation notice is not the user's concern here)."""
    resolver = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(
            model_path=model_path, num_threads=num_threads or os.cpu_count(),
            experimental_op_resolver_type=resolver.AUTO if default_delegates else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


class Runner:
    """Runs a .tflite model on batches of any size; returns the logits.

    XNNPACK, TFLite's default CPU delegate, refuses some models (dynamic-range
    quantised kernels stored sparse among them); those run on the builtin kernels,
    and `delegate` says which ran.
    """

    def __init__(self, model_path: str, num_threads: Optional[int] = None):
        self.model_path, self.num_threads = model_path, num_threads
        self.delegate = "xnnpack"
        self._open(default_delegates=True)

    def _open(self, default_delegates: bool):
        self.interpreter = interpreter(self.model_path, self.num_threads, default_delegates)
        signature = self.interpreter.get_signature_runner(SIGNATURE)
        self.input = next(iter(signature.get_input_details().values()))
        self.logits = signature.get_output_details()["logits"]["index"]
        self.batch = None

    def _resize(self, shape):
        self.interpreter.resize_tensor_input(self.input["index"], list(shape))
        self.interpreter.allocate_tensors()
        self.batch = shape[0]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.batch != len(images):
            try:
                self._resize(images.shape)
            except RuntimeError:
                if self.delegate != "xnnpack":
                    raise
                self.delegate = "none"
                self._open(default_delegates=False)
                self._resize(images.shape)
        self.interpreter.set_tensor(self.input["index"], images.astype(self.input["dtype"]))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.logits)

    def predict(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        return np.concatenate([self(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def export_tflite(serve, model, path: str, reference: Callable[[np.ndarray], np.ndarray], check_images: np.ndarray,
                  quantize: str = "none", representative_images=None, test_images=None) -> Dict:
    """Converts, writes `path` and checks it against the dense model's logits.

    Returns:
      {'bytes', 'quantize', 'max_abs_diff', 'delegate'} plus, when test images are given,
      'top1_agreement' and 'test_examples'.

    Raises:
      ExportError: conversion failed, or float outputs differ by more than 1e-4.
    """
    flatbuffer = convert(serve, model, quantize, representative_images)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
    runner = Runner(path)
    difference = float(np.max(np.abs(runner.predict(check_images) - reference(check_images))))
    report = {"bytes": len(flatbuffer), "quantize": quantize, "max_abs_diff": difference, "delegate": runner.delegate}
    if quantize == "none" and not difference <= FLOAT_TOLERANCE:
        raise ExportCheckError(f"TFLite outputs differ from the dense model by {difference:.3g} > {FLOAT_TOLERANCE}")
    if test_images is not None and len(test_images):
        agreement = np.argmax(runner.predict(test_images), -1) == np.argmax(reference(test_images), -1)
        report.update(top1_agreement=float(agreement.mean()), test_examples=int(len(test_images)))
    return report
