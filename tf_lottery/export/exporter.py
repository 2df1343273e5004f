"""Exports one finished run in several formats and checks every artifact's outputs."""

import os
from typing import Dict, Iterable

import numpy as np
import tensorflow as tf

from tf_lottery import data, distribute
from tf_lottery import ticket as ticket_lib
from tf_lottery.data import pipeline
from tf_lottery.export import EXTRA_FORMATS, FILE_NAMES, FORMATS, SUMMARY_FILE, default_output
from tf_lottery.export import saved_model as dense_export
from tf_lottery.export import sparse as sparse_export
from tf_lottery.export import tflite as tflite_export
from tf_lottery.experiment.reader import Experiment
from tf_lottery.export.source import ExportCheckError, ExportError, TrainedRun, build_model, load_run
from tf_lottery.pruning import constraint, masks as masks_lib
from tf_lottery.training import checkpoints
from tf_lottery.utils import write_json

SAVED_MODEL_TOLERANCE = 1e-5


def parse_formats(formats) -> tuple:
    """A tuple of known format names from a list or a comma-separated string."""
    if isinstance(formats, str):
        formats = formats.split(",")
    formats = tuple(f.strip() for f in formats if f.strip())
    unknown = [f for f in formats if f not in FORMATS + EXTRA_FORMATS]
    if unknown or not formats:
        raise ExportError(f"--format: unknown format {', '.join(unknown) or '(none given)'}; "
                          f"known: {', '.join(FORMATS + EXTRA_FORMATS)}")
    return formats


def check_images(run: TrainedRun, count: int) -> np.ndarray:
    """Random inputs of the serving signature: uint8 images (unlike digits, they reach every input
    weight: MNIST's borders are all 0), character ids of the whole vocabulary, or normal observations."""
    info = run.experiment.dataset
    shape, rng = info.input_shape, np.random.default_rng(0)
    if info.task == "language_model":
        return rng.integers(0, info.num_classes, size=(count, *shape), dtype=np.int32)
    if info.task == "reinforcement":
        return rng.standard_normal(size=(count, *shape)).astype(np.float32)
    return rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)


def _max_difference(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def _check_saved_model(path: str, images: np.ndarray, reference: np.ndarray, what: str,
                       input_name: str = dense_export.INPUT_NAME) -> float:
    """Loads a SavedModel back and compares its serving signature's logits with `reference`."""
    serve = tf.saved_model.load(path).signatures[dense_export.SIGNATURE]
    outputs = serve(**{input_name: tf.constant(images)})
    difference = _max_difference(outputs["logits"], reference)
    if not difference <= SAVED_MODEL_TOLERANCE:
        raise ExportCheckError(f"{what} outputs differ by {difference:.3g} > {SAVED_MODEL_TOLERANCE} ({path})")
    return difference


def _splits(run: TrainedRun):
    config = run.experiment.config.data
    try:
        return data.for_config(config)
    except data.DataError as error:
        raise ExportError(f"TFLite quantisation needs the dataset: {str(error).splitlines()[0]}") from None


def export_tflite(run: TrainedRun, serving, path: str, images, quantize: str, representative_examples: int) -> Dict:
    dense_logits = lambda x: serving(x, training=False).numpy()  # noqa: E731
    serve = dense_export.make_serve_function(lambda x: serving(x, training=False), dense_export.input_spec(run))
    representative = test_images = None
    if quantize != "none":
        splits = _splits(run)
        test_images = splits.test_images
        picks = np.random.default_rng(0).choice(len(splits.train_images), representative_examples, replace=False)
        representative = splits.train_images[np.sort(picks)]
    return tflite_export.export_tflite(serve, serving, path, dense_logits, images, quantize, representative, test_images)


def export_ticket(run: TrainedRun, path: str, metadata: Dict) -> Dict:
    """Writes the untrained ticket: the run's masks over the weights it was reset to."""
    values, names, source = run.experiment.initial_weights(run.replicate, run.level, run.variant)
    start = run.experiment.start_of(run.replicate, run.level, run.variant)[2]
    model = build_model(run.experiment)
    checkpoints.assign_weights(model, values, source=source)
    masks_lib.apply_masks(model, run.masks)  # pruned weights become exact zeros
    header = {**metadata, "initial_weights": source,
              "rewind_iteration": start}
    ticket_lib.save_ticket(path, header, [v.numpy() for v in constraint.model_weights(model)], names, run.masks)
    return {"bytes": os.path.getsize(path), "initial_weights": source}


def export(experiment_dir: str, level, variant: str, replicate: int, formats: Iterable[str], output: str,
           quantize: str, tolerance: float, check_examples: int, representative_examples: int) -> Dict:
    """See tf_lottery.export.export."""
    formats = parse_formats(formats)
    if quantize not in tflite_export.QUANTIZATIONS:
        raise ExportError(f"--quantize: expected one of {', '.join(tflite_export.QUANTIZATIONS)}, got {quantize!r}")
    if check_examples <= 0 or representative_examples <= 0:
        raise ExportError("--check_examples and --representative_examples must be > 0")
    experiment = Experiment.open(experiment_dir)
    skipped = {}
    if experiment.dataset.task == "language_model" and "tflite" in formats:
        # TF 2.21's converter needs a static batch for an LSTM's tensor lists, and with one the
        # lstm_lm's TFLite logits were measured 8.9 away from the model's: refused for language models.
        if formats != FORMATS:
            raise ExportError("--format=tflite: language models are exported as SavedModels and tickets only "
                              "(TFLite's conversion of their recurrent and attention layers does not match them)")
        formats = tuple(f for f in formats if f != "tflite")
        skipped["tflite"] = "not written for a language model: TFLite's conversion does not match it"
    level = experiment.resolve_level(level, replicate, variant, tolerance)
    if "ticket" in formats:
        experiment.initial_weights(replicate, level, variant)  # fails now, before anything is written
    output = os.path.abspath(output or default_output(experiment.paths.root, replicate, level, variant))
    os.makedirs(output, exist_ok=True)
    # A mixed-precision training process (main.py --export_final) must still export float32 networks.
    with distribute.precision_policy("float32"):
        run = load_run(experiment, replicate, level, variant)
        metadata = run.metadata()
        summary = {"experiment_dir": experiment.paths.root, "replicate": replicate, "level": level,
                   "variant": variant, "density": run.density, "output": output, "formats": {},
                   **({"skipped": skipped} if skipped else {})}
        images = check_images(run, check_examples)
        input_name = dense_export.task_input(experiment.dataset)[0]
        training_logits = run.model(pipeline.preprocess_fn(experiment.dataset)(images), training=False).numpy()
        serving = dense_export.serving_model(run)
        dense_logits = serving(images, training=False).numpy()
        paths = {f: os.path.join(output, FILE_NAMES[f]) for f in formats}
        if "saved_model" in formats:
            dense_export.export_saved_model(run, paths["saved_model"], metadata)
            summary["formats"]["saved_model"] = {
                "path": paths["saved_model"], "bytes": dense_export.directory_bytes(paths["saved_model"]),
                "variables_bytes": dense_export.directory_bytes(paths["saved_model"], "variables"),
                # Against the training model: the export computes what training computed.
                "max_abs_diff": _check_saved_model(paths["saved_model"], images, training_logits, "dense SavedModel",
                                                   input_name),
            }
        if "sparse_saved_model" in formats:
            encodings = sparse_export.export_sparse_saved_model(run, paths["sparse_saved_model"], metadata)
            summary["formats"]["sparse_saved_model"] = {
                "path": paths["sparse_saved_model"], "bytes": dense_export.directory_bytes(paths["sparse_saved_model"]),
                "variables_bytes": dense_export.directory_bytes(paths["sparse_saved_model"], "variables"),
                "encodings": encodings,
                "max_abs_diff": _check_saved_model(paths["sparse_saved_model"], images, dense_logits, "sparse SavedModel",
                                                   input_name),
            }
        if "tflite" in formats:
            report = export_tflite(run, serving, paths["tflite"], images, quantize, representative_examples)
            summary["formats"]["tflite"] = {"path": paths["tflite"], **report}
        if "ticket" in formats:
            summary["formats"]["ticket"] = {"path": paths["ticket"], **export_ticket(run, paths["ticket"], metadata)}
    write_json(os.path.join(output, SUMMARY_FILE), summary)
    return summary
