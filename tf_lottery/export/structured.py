"""Structured exports: a ticket that removed whole units ships as a smaller dense network.

--pruning_structure=neurons|channels: every unit group's layer keeps only the
units its consumers still read (kernel columns or filters, bias entries, the
BatchNorm right after it), each consumer's input axis is cut to match (through a
Flatten: the kept channels' positions in the flattened vector), and output layers
keep all their outputs. The result is an ordinary tf_keras model with fewer
weights, no masks and no zeros to skip; it is checked against the masked model,
then written as a SavedModel (uint8 images in, logits and probabilities out, as
export/saved_model.py) and as a float TFLite file.

--pruning_structure=n_of_m: nothing can be removed, so the float TFLite model is
converted with Optimize.EXPERIMENTAL_SPARSITY and the flatbuffer is inspected to
record what the converter did with each kernel. TFLite's converter (TF 2.21)
stores a kernel with at least 30% zeros in its sparse format, as blocks only
where the op has a block kernel (1x4 blocks of FULLY_CONNECTED); an N:M pattern
is no block pattern, so it is stored as random sparsity behind a DENSIFY op:
smaller on disk, computed dense. XNNPACK's sparse inference applies only to
1x1 CONV_2D subgraphs of Fast Sparse ConvNets (>= 2/3 zeros), none of which
these models have. The metadata says so per kernel; no speed-up is claimed.
"""

import os
import shutil
import tempfile
from typing import Dict, List

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery.errors import UsageError
from tf_lottery.export import saved_model as dense_export
from tf_lottery.export import tflite as tflite_export
from tf_lottery.export.source import ExportCheckError, ExportError, TrainedRun
from tf_lottery.pruning import constraint, prunable

SHRINKING = ("neurons", "channels")
STRUCTURES = SHRINKING + ("n_of_m",)
SAVED_MODEL_DIR, TFLITE_FILE = "saved_model", "model.tflite"
TOLERANCE = 1e-5  # exporter.SAVED_MODEL_TOLERANCE, relative to max(1, the largest |logit|)


def structure_of(experiment) -> str:
    return getattr(experiment.config.pruning, "pruning_structure", "unstructured")


def require_structured(experiment):
    """Raises ExportError, one line, for an experiment whose tickets have no structure to export."""
    structure = structure_of(experiment)
    if structure not in STRUCTURES:
        raise ExportError(f"--format=structured: this experiment's tickets are {structure} "
                          f"(--pruning_structure={structure}); export them with --format=sparse_saved_model or "
                          "tflite, or train with --pruning_structure=neurons|channels|n_of_m")
    return structure


# Which units stay ------------------------------------------------------------------


def _unit_groups(model, structure_name: str):
    from tf_lottery.pruning import structure  # pylint: disable=import-outside-toplevel

    try:
        return structure.structure_groups(model, structure_name)
    except UsageError as error:
        raise ExportError(f"--format=structured: {error.one_line()}") from None


def _rows_read(mask: np.ndarray, axis: int, tile: int, units: int) -> np.ndarray:
    """Per producing unit: whether any surviving weight of a consumer reads it."""
    rows = np.moveaxis(np.asarray(mask) != 0, axis, 0).reshape(mask.shape[axis], -1).any(axis=1)
    return rows.reshape(tile, units).any(axis=0)  # channels-last Flatten: input i is unit i % units


def kept_units(groups, masks) -> Dict[str, np.ndarray]:
    """{layer: bool per unit}: a unit stays iff a consumer's surviving weights read it.

    structure.kept_units keeps a unit iff its own kernel column survives; the two agree
    on the masks structure.weight_masks writes (removed units lose their consumers'
    rows too). Where they differ, what consumers read decides: a unit whose column is
    all zero still sends activation(bias) to a consumer that reads it, so removing it
    would change the outputs, and a unit nobody reads can go whatever its column holds.
    """
    kept = {}
    for group in groups:
        read = np.zeros(group.units, bool)
        for consumer in group.consumers:
            read |= _rows_read(masks[consumer.path], consumer.axis, consumer.tile, group.units)
        if not read.any():
            raise ExportError(f"--format=structured: no unit of layer {group.layer} is left")
        kept[group.layer] = read
    return kept


# The smaller model -------------------------------------------------------------------


def _slices(groups, kept):
    """{layer: kept output units}, {batchnorm: kept channels}, {layer: (input axis, kept inputs)}."""
    outputs, norms, inputs = {}, {}, {}
    for group in groups:
        outputs[group.layer] = kept[group.layer]
        if group.batchnorm:
            norms[group.batchnorm] = kept[group.layer]
        for consumer in group.consumers:
            layer = consumer.path.split("/")[0]
            if layer in inputs:
                raise ExportError(f"--format=structured: layer {layer} reads two unit groups; not supported")
            inputs[layer] = (consumer.axis, np.tile(kept[group.layer], consumer.tile))
    return outputs, norms, inputs


def _sliced_weights(layer, outputs, norms, inputs) -> List[np.ndarray]:
    values = layer.get_weights()
    if layer.name in norms:  # gamma, beta, moving mean and variance: all per channel
        return [v[..., norms[layer.name]] for v in values]
    if layer.name not in outputs and layer.name not in inputs:
        return values
    if not isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
        raise ExportError(f"--format=structured: cannot cut layer {layer.name} ({type(layer).__name__})")
    kernel, rest = values[0], values[1:]
    if layer.name in inputs:
        axis, keep = inputs[layer.name]
        kernel = np.compress(keep, kernel, axis=axis)
    if layer.name in outputs:
        kernel = kernel[..., outputs[layer.name]]
        rest = [v[outputs[layer.name]] for v in rest]  # the bias
    return [kernel, *rest]


def smaller_model(plain: keras.Model, groups, kept) -> keras.Model:
    """A copy of the plain (mask-folded) network with only the kept units of every group."""
    outputs, norms, inputs = _slices(groups, kept)

    def clone(layer):
        config = layer.get_config()
        if layer.name in outputs:
            config["filters" if "filters" in config else "units"] = int(outputs[layer.name].sum())
        return type(layer).from_config(config)

    small = keras.models.clone_model(plain, clone_function=clone)
    for layer, copy in zip(constraint.walk_layers(plain), constraint.walk_layers(small)):
        try:
            copy.set_weights(_sliced_weights(layer, outputs, norms, inputs))
        except ValueError as error:  # a per-channel layer between a group and its consumers other than its BatchNorm
            raise ExportError(f"--format=structured: cannot cut layer {layer.name} ({type(layer).__name__}): "
                              f"{str(error).splitlines()[0]}") from None
    return small


def serving(run: TrainedRun, network: keras.Model) -> keras.Model:
    """uint8 images -> logits of `network`, with the run's preprocessing inside (as export/saved_model.py)."""
    images = keras.Input(shape=run.experiment.dataset.input_shape, dtype="uint8", name=dense_export.INPUT_NAME)
    return keras.Model(images, network(dense_export.preprocessing_layer(run)(images)), name=f"{network.name}_serving")


def check(logits: np.ndarray, reference: np.ndarray, what: str) -> float:
    """Max |difference|; raises ExportCheckError above TOLERANCE x max(1, max |reference logit|)."""
    difference = float(np.max(np.abs(np.asarray(logits) - reference)))
    bound = TOLERANCE * max(1.0, float(np.max(np.abs(reference))))
    if not difference <= bound:
        raise ExportCheckError(f"{what} outputs differ from the masked model's by {difference:.3g} > {bound:.3g}")
    return difference


def save_serving_model(model: keras.Model, run: TrainedRun, path: str, metadata: Dict):
    """Writes a serving model as a SavedModel with the serving signature and the metadata asset."""
    serve = dense_export.make_serve_function(lambda images: model(images, training=False), dense_export.input_spec(run))
    staging = dense_export.saving_to(path)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            model.tf_lottery_metadata = tf.saved_model.Asset(dense_export.write_metadata(scratch, metadata))
            target = os.path.join(staging, "model")
            logger, level = tf.get_logger(), tf.get_logger().level
            logger.setLevel("ERROR")  # an uncompiled model warns that its metrics are not built
            try:
                model.save(target, save_format="tf", include_optimizer=False,
                           signatures={dense_export.SIGNATURE: serve.get_concrete_function()})
            finally:
                logger.setLevel(level)
        dense_export.replace_directory(target, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return serve


def unit_counts(groups, kept, masks) -> Dict[str, Dict[str, int]]:
    """Per layer: its units, those kept, and those kept only because a consumer reads them (their own
    column pruned: 0 for the masks structure.weight_masks writes)."""
    from tf_lottery.pruning import structure  # pylint: disable=import-outside-toplevel

    columns = structure.kept_units(groups, masks)
    return {g.layer: {"original": int(g.units), "kept": int(kept[g.layer].sum()),
                      "read_though_pruned": int((kept[g.layer] & ~columns[g.layer]).sum())} for g in groups}


def weight_count(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights))


def export_smaller(run: TrainedRun, folder: str, metadata: Dict, images: np.ndarray) -> Dict:
    """Writes <folder>/saved_model and <folder>/model.tflite of a neurons/channels ticket."""
    groups = _unit_groups(run.model, structure_of(run.experiment))
    kept = kept_units(groups, run.masks)
    masked = dense_export.serving_model(run)
    reference = masked(images, training=False).numpy()
    model = serving(run, smaller_model(dense_export.plain_model(run.model), groups, kept))
    in_memory = check(model(images, training=False).numpy(), reference, "structured model")
    units = unit_counts(groups, kept, run.masks)
    metadata = {**metadata, "structure": structure_of(run.experiment), "units": units,
                "parameters": {"original": weight_count(masked), "structured": weight_count(model)}}
    os.makedirs(folder, exist_ok=True)
    saved_model_path = os.path.join(folder, SAVED_MODEL_DIR)
    serve = save_serving_model(model, run, saved_model_path, metadata)
    loaded = tf.saved_model.load(saved_model_path).signatures[dense_export.SIGNATURE]
    saved = check(loaded(**{dense_export.INPUT_NAME: tf.constant(images)})["logits"].numpy(), reference,
                  "structured SavedModel")
    tflite_path = os.path.join(folder, TFLITE_FILE)
    report = tflite_export.export_tflite(serve, model, tflite_path, lambda x: masked(x, training=False).numpy(), images)
    dense_export.write_metadata(folder, metadata)
    return {"path": folder, "structure": metadata["structure"], "units": units, "parameters": metadata["parameters"],
            "max_abs_diff": max(in_memory, saved),
            "saved_model": {"path": saved_model_path, "bytes": dense_export.directory_bytes(saved_model_path)},
            "tflite": {"path": tflite_path, **report},
            "bytes": dense_export.directory_bytes(saved_model_path) + report["bytes"]}


# N:M tickets --------------------------------------------------------------------------


def n_of_m_pattern(mask: np.ndarray, axis: int, n: int, m: int) -> bool:
    """Whether at most n of every m consecutive weights along `axis` survive."""
    moved = np.moveaxis(np.asarray(mask) != 0, axis, -1)
    if moved.shape[-1] % m:
        return False
    return bool((moved.reshape(*moved.shape[:-1], -1, m).sum(-1) <= n).all())


def _tflite_layout(path: str, shape) -> tuple:
    """The shape TFLite gives a Keras kernel: Dense [out, in], Conv2D [out, h, w, in]."""
    return tuple(shape[::-1]) if len(shape) == 2 else (shape[3], shape[0], shape[1], shape[2])


def sparsity_report(model_path: str, kernels: Dict[str, tuple]) -> Dict[str, Dict]:
    """{kernel path: how the flatbuffer stores and computes it}, matched to ops by layout shape, in order."""
    interpreter = tflite_export.interpreter(model_path, default_delegates=False)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # pylint: disable=protected-access  (the only op listing tf.lite has)
    producers = {int(o): op for op in ops for o in op["outputs"]}
    found = []
    for op in ops:
        if op["op_name"] not in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        weight = int(op["inputs"][1])
        densify = producers.get(weight, {}).get("op_name") == "DENSIFY"
        stored = int(producers[weight]["inputs"][0]) if densify else weight
        sparse = bool(tensors[stored].get("sparsity_parameters"))
        block = tensors[stored]["sparsity_parameters"].get("block_map") if sparse else None
        found.append((tuple(int(d) for d in tensors[weight]["shape"]), {
            "op": op["op_name"],
            "stored": ("sparse, blocks" if block is not None and len(block) else "sparse, random") if sparse else "dense",
            "computed": "sparse kernel" if sparse and not densify else "dense (DENSIFY at load)" if sparse else "dense",
        }))
    report = {}
    for path, shape in kernels.items():
        match = next((i for i, (s, _) in enumerate(found) if s == _tflite_layout(path, shape)), None)
        report[path] = found.pop(match)[1] if match is not None else {"op": "not found", "stored": "?", "computed": "?"}
    return report


def export_n_of_m(run: TrainedRun, folder: str, metadata: Dict, images: np.ndarray) -> Dict:
    """Writes <folder>/model.tflite of an N:M ticket, with what the converter did to each kernel."""
    n, m = tuple(getattr(run.experiment.config.pruning, "n_of_m", (2, 4)))
    slots = prunable.slots_by_path(run.model)
    axes = {path: 0 if slots[path].kind != "conv" else len(mask.shape) - 2 for path, mask in run.masks.items()}
    masked = dense_export.serving_model(run)
    serve = dense_export.make_serve_function(lambda x: masked(x, training=False), dense_export.input_spec(run))
    os.makedirs(folder, exist_ok=True)
    tflite_path = os.path.join(folder, TFLITE_FILE)
    report = tflite_export.export_tflite(serve, masked, tflite_path, lambda x: masked(x, training=False).numpy(), images)
    kernels = sparsity_report(tflite_path, {p: mask.shape for p, mask in run.masks.items()})
    for path, mask in run.masks.items():
        kernels[path]["n_of_m_on_input_axis"] = n_of_m_pattern(mask, axes[path], n, m)
    exploited = sorted(p for p, k in kernels.items() if k["computed"] == "sparse kernel")
    metadata = {**metadata, "structure": "n_of_m", "n_of_m": [n, m], "kernels": kernels,
                "kernels_computed_sparse": exploited,
                "note": "TFLite stores N:M kernels as random sparsity and densifies them at load (DENSIFY); "
                        "XNNPACK's sparse inference covers only 1x1 CONV_2D subgraphs. Smaller file, dense compute."}
    dense_export.write_metadata(folder, metadata)
    return {"path": folder, "structure": "n_of_m", "n_of_m": [n, m], "kernels": kernels,
            "kernels_computed_sparse": exploited, "max_abs_diff": report["max_abs_diff"],
            "tflite": {"path": tflite_path, **report}, "bytes": report["bytes"]}


def export_structured(run: TrainedRun, folder: str, metadata: Dict, images: np.ndarray) -> Dict:
    """The structured export of `run` into `folder`, by its experiment's --pruning_structure."""
    structure = require_structured(run.experiment)
    if structure in SHRINKING:
        return export_smaller(run, folder, metadata, images)
    return export_n_of_m(run, folder, metadata, images)


def export(experiment_dir: str, level, variant: str, replicate: int, others, output, quantize: str, tolerance: float,
           check_examples: int, representative_examples: int) -> Dict:
    """tf_lottery.export.export with 'structured' among the formats; `others` go through exporter.export."""
    from tf_lottery import distribute  # pylint: disable=import-outside-toplevel
    from tf_lottery.export import FILE_NAMES, SUMMARY_FILE, default_output, exporter  # pylint: disable=import-outside-toplevel
    from tf_lottery.experiment.reader import Experiment  # pylint: disable=import-outside-toplevel
    from tf_lottery.export.source import load_run  # pylint: disable=import-outside-toplevel
    from tf_lottery.utils import write_json  # pylint: disable=import-outside-toplevel

    experiment = Experiment.open(experiment_dir)
    require_structured(experiment)  # before anything is written
    if check_examples <= 0:
        raise ExportError("--check_examples and --representative_examples must be > 0")
    level = experiment.resolve_level(level, replicate, variant, tolerance)
    summary = None
    if others:
        summary = exporter.export(experiment_dir, level, variant, replicate, others, output, quantize, tolerance,
                                  check_examples, representative_examples)
    output = os.path.abspath(output or default_output(experiment.paths.root, replicate, level, variant))
    with distribute.precision_policy("float32"):
        run = load_run(experiment, replicate, level, variant)
        entry = export_structured(run, os.path.join(output, FILE_NAMES["structured"]), run.metadata(),
                                  exporter.check_images(run, check_examples))
    summary = summary or {"experiment_dir": experiment.paths.root, "replicate": replicate, "level": level,
                          "variant": variant, "density": run.density, "output": output, "formats": {}}
    summary["formats"]["structured"] = entry
    write_json(os.path.join(output, SUMMARY_FILE), summary)
    return summary
