"""--format=structured: a neurons/channels ticket ships as a smaller dense network with the masked model's outputs."""

import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tf_lottery import models
from tf_lottery.data.datasets import DatasetInfo
from tf_lottery.export import __main__ as cli, saved_model as dense_export, structured, tflite
from tf_lottery.models.layers import masked_conv2d, masked_dense
from tf_lottery.pruning import masks as masks_lib, prunable, structure


def _conv_bn_model():
    """Conv-BatchNorm-ReLU-pool, Conv, Flatten, Dense, output: every cut the export makes."""
    inputs = keras.Input((12, 12, 3), name="image")
    x = masked_conv2d(8, 3, name="conv1", padding="same")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = masked_conv2d(6, 3, name="conv2", padding="valid", activation="relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = masked_dense(16, name="fc1", activation="relu")(x)
    model = keras.Model(inputs, masked_dense(10, name="output")(x), name="conv_bn")
    prunable.declare_outputs(model, ["output"])
    return prunable.attach_masks(model)


def _run(model, structure_name, shape, seed=0):
    """A stand-in for a finished run: random weights (biases and BatchNorm statistics too), a ticket of `structure_name`."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) + (1.0 if "variance" in w.name else 0.0)
                           if "mask" not in w.name else w.numpy() for w in layer.weights])
    groups = structure.structure_groups(model, structure_name)
    kept = {g.layer: rng.random(g.units) < 0.5 for g in groups}
    for g in groups:
        kept[g.layer][0] = True
    run_masks = structure.weight_masks(groups, kept, masks_lib.ones_like_model(model))
    masks_lib.apply_masks(model, run_masks)
    info = DatasetInfo("random", shape, 10, (0.5,) * shape[-1], (0.25,) * shape[-1])
    config = types.SimpleNamespace(pruning=types.SimpleNamespace(pruning_structure=structure_name, n_of_m=(2, 4)))
    run = types.SimpleNamespace(model=model, masks=run_masks, experiment=types.SimpleNamespace(dataset=info, config=config))
    return run, groups, kept


def _images(shape, count=32, seed=1):
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


@pytest.fixture(scope="module", params=["mlp", "conv_bn"])
def exported(request, tmp_path_factory):
    if request.param == "mlp":
        shape = (28, 28, 1)
        run, groups, kept = _run(models.build("mlp", shape, 10, seed=0, hidden_units=(24, 12)), "neurons", shape)
    else:
        shape = (12, 12, 3)
        run, groups, kept = _run(_conv_bn_model(), "channels", shape)
    folder = str(tmp_path_factory.mktemp(request.param) / "structured")
    entry = structured.export_structured(run, folder, {"model": request.param}, _images(shape, 64))
    return run, groups, kept, entry, shape


def test_the_smaller_model_serves_the_masked_models_outputs(exported):
    run, _, _, entry, shape = exported
    images = _images(shape, seed=2)
    expected = dense_export.serving_model(run)(images).numpy()
    served = tf.saved_model.load(entry["saved_model"]["path"]).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(served["logits"].numpy(), expected, atol=1e-5 * max(1, np.abs(expected).max()), rtol=0)
    np.testing.assert_allclose(tflite.Runner(entry["tflite"]["path"])(images), expected, atol=1e-4, rtol=0)


def test_layers_have_the_kept_counts_and_the_metadata_says_so(exported):
    _, groups, kept, entry, _ = exported
    network = keras.models.load_model(entry["saved_model"]["path"])
    layers = {layer.name: layer for layer in network.layers[-1].layers} if isinstance(network.layers[-1], keras.Model) \
        else {layer.name: layer for layer in network.layers}
    for group in groups:
        count = int(kept[group.layer].sum())
        assert 0 < count < group.units
        assert layers[group.layer].kernel.shape[-1] == count
        if group.batchnorm:
            assert layers[group.batchnorm].gamma.shape == (count,)
        assert entry["units"][group.layer] == {"original": group.units, "kept": count, "read_though_pruned": 0}
    assert layers["output"].kernel.shape[-1] == 10
    assert entry["parameters"]["structured"] < entry["parameters"]["original"]
    with open(os.path.join(entry["saved_model"]["path"], "assets", dense_export.METADATA_FILE)) as f:
        assert json.load(f)["units"] == entry["units"]


def test_a_unit_whose_column_is_zero_but_still_read_is_kept():
    shape = (28, 28, 1)
    run, groups, kept = _run(models.build("mlp", shape, 10, seed=0, hidden_units=(8,)), "neurons", shape)
    removed = int(np.flatnonzero(~kept["fc1"])[0])
    run.masks["output/kernel"][removed] = 1.0  # its activation(bias) still reaches the output
    masks_lib.apply_masks(run.model, run.masks)
    assert structured.kept_units(groups, run.masks)["fc1"][removed]


def test_n_of_m_pattern_and_what_tflite_records(tmp_path):
    shape = (28, 28, 1)
    model = models.build("mlp", shape, 10, seed=0, hidden_units=(16,))
    values = masks_lib.prunable_values(model)
    run_masks = structure.n_of_m_masks(values, masks_lib.ones_like_model(model), {p: 0.5 for p in values}, (2, 4), 1)
    run_masks["output/kernel"] = np.ones_like(run_masks["output/kernel"])
    masks_lib.apply_masks(model, run_masks)
    info = DatasetInfo("random", shape, 10, (0.5,), (0.25,))
    config = types.SimpleNamespace(pruning=types.SimpleNamespace(pruning_structure="n_of_m", n_of_m=(2, 4)))
    run = types.SimpleNamespace(model=model, masks=run_masks, experiment=types.SimpleNamespace(dataset=info, config=config))
    entry = structured.export_structured(run, str(tmp_path / "structured"), {}, _images(shape, 32))
    fc1 = entry["kernels"]["fc1/kernel"]
    assert fc1["n_of_m_on_input_axis"] and fc1["stored"].startswith("sparse")
    assert not entry["kernels"]["output/kernel"]["n_of_m_on_input_axis"]
    assert entry["kernels_computed_sparse"] == [], "TF 2.21's converter densifies N:M kernels at load"
    assert entry["max_abs_diff"] <= 1e-4


def test_an_unstructured_experiment_is_refused_in_one_line(pruned_experiment, tmp_path, capsys):
    try:
        code = cli.main(["tf_lottery.export", f"--experiment_dir={pruned_experiment}", "--format=structured",
                         f"--output={tmp_path}"])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--format=structured: this experiment's tickets are unstructured (--pruning_structure=unstructured)" in err
    assert not os.listdir(tmp_path)


def test_the_command_line_writes_a_structured_export_beside_other_formats(pruned_experiment, tmp_path, capsys):
    """A copy of the shared experiment relabelled as a neurons experiment: its masks are what they are, and
    units nobody reads any more (the output layer's rows of them pruned) are cut out."""
    import shutil  # pylint: disable=import-outside-toplevel

    copy = str(tmp_path / "neurons")
    shutil.copytree(pruned_experiment, copy)
    with open(os.path.join(copy, "config.json")) as f:
        stored = json.load(f)
    stored["config"]["pruning_structure"] = "neurons"  # config.json holds the flat fields
    with open(os.path.join(copy, "config.json"), "w") as f:
        json.dump(stored, f)
    output = tmp_path / "out"
    code = cli.main(["tf_lottery.export", f"--experiment_dir={copy}", "--level=3", "--format=ticket,structured",
                     f"--output={output}"])
    out = capsys.readouterr().out
    assert code == 0
    with open(output / "export.json") as f:
        summary = json.load(f)
    assert sorted(summary["formats"]) == ["structured", "ticket"]
    entry = summary["formats"]["structured"]
    assert entry["units"]["fc1"]["original"] == 32 and entry["max_abs_diff"] <= 1e-4
    assert os.path.exists(output / "structured" / "model.tflite") and "units kept fc1" in out
