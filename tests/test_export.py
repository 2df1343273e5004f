"""Export: every format round-trips with the outputs of the model it came from."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tf_lottery import export
from tf_lottery.data import pipeline
from tf_lottery.export import saved_model as dense_export, sparse, tflite
from tf_lottery.experiment import results
from tf_lottery.experiment.reader import Experiment
from tf_lottery.experiment.selection import NoMatchingLevel
from tf_lottery.export.source import load_run
from tf_lottery.pruning import constraint

SPARSEST = 3


def _images(count, seed=1):
    return np.random.default_rng(seed).integers(0, 256, size=(count, 28, 28, 1), dtype=np.uint8)


def _serve(path, images):
    outputs = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    return {k: v.numpy() for k, v in outputs.items()}


@pytest.fixture(scope="module")
def sparsest(pruned_experiment, tmp_path_factory):
    """Every format of the sparsest level, exported once."""
    output = str(tmp_path_factory.mktemp("export") / "level3")
    summary = export.export(pruned_experiment, level=SPARSEST, output=output)
    return summary, load_run(Experiment.open(pruned_experiment), 0, SPARSEST, "imp")


@pytest.fixture(scope="module")
def sparse_by_level(pruned_experiment, sparsest, tmp_path_factory):
    """{level: export summary} of the sparse SavedModel at every level (the sparsest has every format)."""
    root = tmp_path_factory.mktemp("levels")
    summaries = {level: export.export(pruned_experiment, level=level, formats="sparse_saved_model",
                                      output=str(root / f"level{level}")) for level in range(SPARSEST)}
    return {**summaries, SPARSEST: sparsest[0]}


def test_writes_every_format_and_a_summary(sparsest):
    summary, run = sparsest
    assert sorted(summary["formats"]) == sorted(export.FORMATS)
    with open(os.path.join(summary["output"], export.SUMMARY_FILE)) as f:
        assert json.load(f)["formats"].keys() == summary["formats"].keys()
    assert summary["level"] == SPARSEST and summary["density"] == pytest.approx(run.density)
    assert summary["density"] < 0.05


def test_dense_saved_model_serves_raw_images_like_the_training_model(sparsest):
    summary, run = sparsest
    images = _images(64)
    outputs = _serve(summary["formats"]["saved_model"]["path"], images)
    expected = run.model(pipeline.preprocess_fn(run.experiment.dataset)(images), training=False).numpy()
    np.testing.assert_allclose(outputs["logits"], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(outputs["probabilities"], tf.nn.softmax(expected).numpy(), atol=1e-6)
    assert summary["formats"]["saved_model"]["max_abs_diff"] <= 1e-5


def test_dense_saved_model_is_plain_keras_with_the_pruned_weights_at_exact_zero(sparsest):
    summary, run = sparsest
    model = keras.models.load_model(summary["formats"]["saved_model"]["path"])
    layers = {layer.name: layer for layer in constraint.walk_layers(model)}
    assert sorted(run.masks) == ["fc1/kernel", "output/kernel"]
    for path, mask in run.masks.items():
        name = path.split("/")[0]
        kernel = layers[name].kernel.numpy()
        assert layers[name].kernel_constraint is None
        assert np.all(kernel[mask == 0] == 0.0)
        np.testing.assert_array_equal(kernel != 0, mask != 0)  # trained survivors are never exactly 0 here
    assert not any("kernel_mask" in w.name for w in model.weights)


def test_metadata_asset(sparsest):
    summary, run = sparsest
    for name in ("saved_model", "sparse_saved_model"):
        with open(os.path.join(summary["formats"][name]["path"], "assets", dense_export.METADATA_FILE)) as f:
            metadata = json.load(f)
        assert metadata["model"] == "mlp" and metadata["dataset"]["name"] == "mnist"
        assert (metadata["level"], metadata["variant"], metadata["replicate"]) == (SPARSEST, "imp", 0)
        assert metadata["density"] == pytest.approx(run.density)
        assert metadata["weight_densities"]["fc1/kernel"] == pytest.approx(np.mean(run.masks["fc1/kernel"]))
        assert metadata["accuracy"]["early_stop_test_accuracy"] == pytest.approx(run.result["early_stop_test_accuracy"])
        assert "--prune_rate=0.8" in metadata["flags"]


def test_sparse_saved_model_matches_the_dense_export(sparsest):
    summary, _ = sparsest
    images = _images(300, seed=2)
    dense = _serve(summary["formats"]["saved_model"]["path"], images)
    sparse_outputs = _serve(summary["formats"]["sparse_saved_model"]["path"], images)
    for key in ("logits", "probabilities"):
        assert np.max(np.abs(dense[key] - sparse_outputs[key])) <= 1e-5
    assert summary["formats"]["sparse_saved_model"]["encodings"] == {"fc1/kernel": "positions", "output/kernel": "bitmap"}


def test_sparse_saved_model_stores_no_dense_pruned_kernel(sparsest):
    summary, run = sparsest
    reader = tf.train.load_checkpoint(os.path.join(summary["formats"]["sparse_saved_model"]["path"], "variables", "variables"))
    shapes = [tuple(shape) for shape in reader.get_variable_to_shape_map().values()]
    assert not any(shape == run.masks["fc1/kernel"].shape or shape == run.masks["output/kernel"].shape for shape in shapes)


def test_sparse_sizes_fall_with_density(sparse_by_level):
    densities = [sparse_by_level[level]["density"] for level in sorted(sparse_by_level)]
    sizes = [sparse_by_level[level]["formats"]["sparse_saved_model"]["variables_bytes"] for level in sorted(sparse_by_level)]
    dense_size = sparse_by_level[SPARSEST]["formats"]["saved_model"]["variables_bytes"]  # the same at every level
    assert densities == sorted(densities, reverse=True)
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    assert sizes[0] == pytest.approx(dense_size, rel=0.05)  # unpruned kernels stay plain
    assert sizes[-1] / dense_size < 0.12
    for level, summary in sparse_by_level.items():
        assert summary["formats"]["sparse_saved_model"]["max_abs_diff"] <= 1e-5, level


def test_encoding_is_the_smallest():
    assert sparse.encoding_for(1000, 1000) == "dense"
    assert sparse.encoding_for(1000, 990) == "dense"  # 990 values + a 125-byte bitmap outweigh 1000 floats
    assert sparse.encoding_for(1000, 600) == "bitmap"
    assert sparse.encoding_for(8000, 1000) == "bitmap"  # 1000 bytes of bits beat 4000 of positions
    assert sparse.encoding_for(8000, 100) == "positions"
    kernel = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    mask = (kernel % 5 == 0).astype(np.float32)
    for encoding in ("positions", "bitmap"):
        values, encoded = sparse.encode(kernel, mask, encoding)
        np.testing.assert_array_equal(values, [5, 10])
        rebuilt = sparse.DenseKernel("k", kernel.shape, tf.Variable(values), tf.Variable(encoded), encoding).read()
        np.testing.assert_array_equal(rebuilt.numpy(), kernel * mask)


def test_tflite_float_matches_the_dense_model(sparsest):
    summary, _ = sparsest
    entry = summary["formats"]["tflite"]
    assert entry["quantize"] == "none" and entry["max_abs_diff"] <= 1e-4
    images = _images(40, seed=3)
    logits = tflite.Runner(entry["path"])(images)
    np.testing.assert_allclose(logits, _serve(summary["formats"]["saved_model"]["path"], images)["logits"], atol=1e-4, rtol=0)
    # Sparsity optimisation: the flatbuffer is far smaller than 4 bytes per weight.
    assert entry["bytes"] < 0.25 * 4 * (784 * 32 + 32 * 10)


def test_tflite_int8_reports_test_set_agreement(pruned_experiment, tmp_path):
    summary = export.export(pruned_experiment, level=1, formats=["tflite"], quantize="int8", output=str(tmp_path),
                            representative_examples=64)
    entry = summary["formats"]["tflite"]
    assert entry["test_examples"] == 10000 and 0.9 <= entry["top1_agreement"] <= 1.0
    interpreter = tflite.interpreter(entry["path"])
    kernel_types = {d["dtype"] for d in interpreter.get_tensor_details() if len(d["shape"]) == 2 and d["shape"][0] == 32}
    assert np.int8 in kernel_types


def test_a_process_without_tf_lottery_serves_both_saved_models(sparsest, tmp_path):
    summary, _ = sparsest
    images = _images(8, seed=4)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import json, sys, numpy as np, tensorflow as tf, tf_keras\n"
        "images = np.load(sys.argv[3])\n"
        "dense = tf.saved_model.load(sys.argv[1]).signatures['serving_default'](images=tf.constant(images))\n"
        "sparse = tf.saved_model.load(sys.argv[2]).signatures['serving_default'](images=tf.constant(images))\n"
        "keras_logits = tf_keras.models.load_model(sys.argv[1])(images)\n"
        "print(json.dumps({'dense': dense['logits'].numpy().tolist(), 'sparse': sparse['logits'].numpy().tolist(),\n"
        "                  'keras': np.asarray(keras_logits).tolist(),\n"
        "                  'probabilities': dense['probabilities'].numpy().sum(-1).tolist(),\n"
        "                  'tf_lottery_imported': any(m.startswith('tf_lottery') for m in sys.modules)}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script, summary["formats"]["saved_model"]["path"],
         summary["formats"]["sparse_saved_model"]["path"], str(tmp_path / "images.npy")],
        cwd=tmp_path, capture_output=True, text=True, timeout=180, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["tf_lottery_imported"]
    expected = _serve(summary["formats"]["saved_model"]["path"], images)["logits"]
    for key in ("dense", "sparse", "keras"):
        np.testing.assert_allclose(result[key], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(result["probabilities"], 1.0, atol=1e-5)


# The "best" level ---------------------------------------------------------------


def _row(level, accuracy, density, variant="imp", replicate=0):
    return {"replicate": str(replicate), "level": str(level), "variant": variant, "density": str(density),
            "early_stop_test_accuracy": str(accuracy)}


def test_best_level_is_the_sparsest_within_tolerance():
    rows = [_row(0, 0.980, 1.0), _row(1, 0.984, 0.5), _row(2, 0.976, 0.25), _row(3, 0.970, 0.12)]
    assert export.best_level(rows, tolerance=0.005) == 2
    assert export.best_level(rows, tolerance=0.0) == 1
    assert export.best_level(rows, tolerance=0.02) == 3
    assert export.best_level(rows[:1], tolerance=0.0) == 0


def test_best_level_stops_at_the_first_level_that_falls_behind():
    rows = [_row(0, 0.980, 1.0), _row(1, 0.979, 0.5), _row(2, 0.960, 0.25), _row(3, 0.981, 0.12)]
    assert export.best_level(rows, tolerance=0.005) == 1, "a lucky level after a failing one is not the ticket"
    assert export.best_level(rows[:2] + rows[3:], tolerance=0.005) == 1, "an unfinished level ends the walk"


def test_best_level_averages_replicates_and_skips_unfinished_numbers():
    rows = [_row(0, 0.98, 1.0), _row(0, 0.98, 1.0, replicate=1),
            _row(1, 0.99, 0.5), _row(1, 0.95, 0.5, replicate=1),  # mean 0.97: out at tolerance 0.005
            _row(2, "nan", 0.25), _row(2, "", 0.25, replicate=1)]
    assert export.best_level(rows, tolerance=0.005) == 0
    assert export.best_level(rows, tolerance=0.005, replicate=0) == 1


def test_best_level_of_a_control_compares_with_the_dense_imp_run():
    rows = [_row(0, 0.98, 1.0), _row(1, 0.981, 0.5, "reinit"), _row(2, 0.95, 0.25, "reinit")]
    assert export.best_level(rows, variant="reinit") == 1
    with pytest.raises(NoMatchingLevel, match="no reinit level"):
        export.best_level(rows[:1] + rows[2:], variant="reinit")
    with pytest.raises(NoMatchingLevel, match="level 0"):
        export.best_level(rows[1:], variant="reinit")


def test_best_level_of_the_experiment(pruned_experiment):
    rows = results.read_table(os.path.join(pruned_experiment, "results.csv"))
    level = Experiment.open(pruned_experiment).resolve_level("best", 0, "imp")
    assert level == export.best_level(rows)
    assert Experiment.open(pruned_experiment).resolve_level("final", 0, "imp") == SPARSEST


def test_export_final_exports_the_last_level_and_leaves_the_experiment_name_alone(pruned_experiment, tmp_path):
    from tf_lottery.config import ExperimentConfig  # pylint: disable=import-outside-toplevel

    copy = str(tmp_path / "copy")
    shutil.copytree(pruned_experiment, copy)
    (summary,) = export.export_final(copy, replicates=1, formats=("ticket",))
    assert summary["level"] == SPARSEST and summary["variant"] == "imp"
    assert summary["output"] == os.path.join(copy, "export", "replicate_0", f"level_{SPARSEST:02d}", "imp")
    assert os.path.exists(os.path.join(summary["output"], "ticket.npz"))
    config = ExperimentConfig()
    assert config.replace(export_final=True).experiment_name == config.experiment_name
