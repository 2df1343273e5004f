"""Language modelling on Tiny Shakespeare: character windows, per-character loss and metrics against a
hand computation, exact masks on embedding, LSTM and attention weights, the text stream's resumption,
both flagfiles shortened, and the export serving character ids."""

import csv
import math
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import kill_9_once_written, run_main, small_config, small_flags
from tf_lottery import data, models, tasks
from tf_lottery.data import pipeline, text
from tf_lottery.experiment import files
from tf_lottery.experiment.paths import ExperimentPaths
from tf_lottery.experiment.results import read_metrics
from tf_lottery.lottery import imp
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.pruning import prunable
from tf_lottery.training import checkpoints
from tf_lottery.training.run import InitialWeights, RunSpec, train
from tf_lottery.training.workbench import Workbench
from test_cifar_flagfiles import parse

SHAKESPEARE = dict(dataset="tiny_shakespeare", sequence_length=16, batch_size=8, eval_batch_size=512,
                   learning_rate=1e-2, hidden_units=())
LSTM = dict(model="lstm_lm", embedding_dim=8, lstm_units=(16,))
TRANSFORMER = dict(model="transformer_lm", embedding_dim=16, num_blocks=1, num_heads=2)


def test_windows_read_n_characters_and_predict_the_n_next():
    vocab = text.vocabulary("abcab", ("abz",))
    assert vocab == "abc\ufffd", "a character only validation has maps to one extra id"
    ids = text.encode("abcabcab", vocab)
    inputs, targets = text.windows(ids, 3)
    assert inputs.tolist() == [[0, 1, 2], [0, 1, 2]] and targets.tolist() == [[1, 2, 0], [1, 2, 0]]
    assert text.decode(text.encode("abz", vocab), vocab) == "ab\ufffd"
    assert text.windows(ids, 8)[0].shape == (0, 8), "a split shorter than one window gives none"


def test_tiny_shakespeare_uses_tfds_splits_and_a_training_vocabulary():
    splits = data.load("tiny_shakespeare", sequence_length=100)
    info = splits.info
    assert (info.task, info.input_shape, info.num_classes) == ("language_model", (100,), 65)
    assert len(info.vocabulary) == 65 and info.vocabulary == "".join(sorted(info.vocabulary))
    # TFDS's own splits (1,003,854 / 55,770 / 55,770 characters), not a carving of train.
    assert (info.train_size, info.validation_size, info.test_size) == (10038, 557, 557)
    assert text.decode(splits.train_images[0][:14], info.vocabulary) == "First Citizen:"
    assert (splits.train_labels[:, :-1] == splits.train_images[:, 1:]).all()
    assert (splits.train_labels[:-1, -1] == splits.train_images[1:, 0]).all(), "windows follow one another"
    assert data.describe("tiny_shakespeare", sequence_length=100) == info
    with pytest.raises(data.DataError, match="not a classification dataset"):
        data.load("tiny_shakespeare", classes=(0, 1))


def test_loss_accuracy_and_bits_per_character_match_a_hand_computation(tmp_path):
    config = small_config(tmp_path, **{**SHAKESPEARE, **LSTM, "eval_batch_size": 3})
    with Workbench(None, str(tmp_path)) as bench:
        trainer = bench.trainer(config)
        images = bench.splits(config).validation_images[:5]
        labels = bench.splits(config).validation_labels[:5]
        values = trainer.evaluate(pipeline.ResidentSplit(tf.constant(images), tf.constant(labels), 3))
        logits = trainer.model(images, training=False).numpy().astype(np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    token_losses = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    assert values["loss"] == pytest.approx(token_losses.mean(), rel=1e-5)
    assert values["accuracy"] == pytest.approx((logits.argmax(-1) == labels).mean())
    assert values["bits_per_character"] == pytest.approx(values["loss"] / math.log(2), rel=1e-12)
    # Training averages each window's positions, then the windows: the same mean for equal windows.
    per_window = tasks.per_example_loss(tf.constant(labels), tf.constant(logits, tf.float32)).numpy()
    assert per_window.shape == (5,) and per_window == pytest.approx(token_losses.mean(-1), rel=1e-5)


@pytest.mark.parametrize("options", [LSTM, TRANSFORMER], ids=["lstm", "transformer"])
def test_pruned_embedding_recurrent_and_attention_weights_stay_exactly_zero(tmp_path, options):
    config = small_config(tmp_path, **SHAKESPEARE, **options, iterations=20, eval_every=20)
    root = ExperimentPaths.of(str(tmp_path), "masks").root
    with Workbench(None, root) as bench:
        model = bench.trainer(config).model
        weights = prunable.prunable_weights(model)
        expected = {"embedding", "recurrent"} if options is LSTM else {"embedding", "attention"}
        assert expected <= {w.kind for w in weights}
        rng = np.random.default_rng(0)
        masks = {w.path: (rng.random(w.variable.shape) < 0.5).astype(np.float32) for w in weights}
        spec = RunSpec(directory=f"{root}/run", config=config, replicate=0, level=1, name="imp", masks=masks,
                       init=InitialWeights.fresh(1))
        train(spec, bench)
        path = f"{root}/run/final_weights.npz"
        final = dict(zip(files.read_weight_names(path), files.read_weights(path)))
    for w in weights:
        value = final[w.variable.name]
        assert (value[masks[w.path] == 0] == 0).all(), w.path
        assert (value[masks[w.path] == 1] != 0).mean() > 0.99, w.path


def test_the_text_stream_resumes_at_the_exact_window(tmp_path):
    splits = data.load("tiny_shakespeare", sequence_length=16)
    whole = pipeline.training_dataset(splits.train_images, splits.train_labels, splits.info, 8, seed=5)
    batches = [b for _, b in zip(range(520), whole)]  # 4,160 windows: into the second epoch (3,921 a pass)
    resumed = pipeline.training_dataset(splits.train_images, splits.train_labels, splits.info, 8, seed=5,
                                        start_iteration=480)
    for expected, got in zip(batches[480:], resumed):
        assert (expected[0].numpy() == got[0].numpy()).all() and (expected[1].numpy() == got[1].numpy()).all()
    # A run killed with kill -9 after a checkpoint and resumed is the run never interrupted.
    common = small_flags(tmp_path, **SHAKESPEARE, **LSTM, iterations=60, eval_every=10, checkpoint_every=20,
                         levels=0, deterministic=True, data_seed=5, experiment_name="x")
    whole = run_main(*common, f"--output_dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = tmp_path / "killed"
    run_dir = killed / "x" / "replicate_0" / "level_00" / "imp"
    # The state file is written last: once it exists the checkpoint is complete.
    kill_9_once_written([sys.executable, "-m", "tf_lottery.main", *common, f"--output_dir={killed}"],
                        str(run_dir / "checkpoints" / "checkpoint"), timeout=240)
    if (run_dir / "result.json").exists():
        pytest.skip("the run finished before it could be killed")
    resumed = run_main(*common, f"--output_dir={killed}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = read_metrics(str(run_dir / "metrics.csv"))
    assert rows == read_metrics(str(tmp_path / "whole/x/replicate_0/level_00/imp/metrics.csv"))
    assert {"bits_per_character", "loss", "accuracy"} <= {r["metric"] for r in rows if r["split"] == "test"}
    final = [files.read_weights(str(d / "x/replicate_0/level_00/imp/final_weights.npz"))
             for d in (tmp_path / "whole", killed)]
    assert len(final[0]) == len(final[1]) and all((a == b).all() for a, b in zip(*final))


SHORT = ("--iterations=6", "--batch_size=4", "--eval_every=3", "--test_every=0", "--checkpoint_every=3",
         "--eval_batch_size=512", "--levels=1", "--noprogress", "--sequence_length=16")


@pytest.mark.parametrize("name", ["lstm_tiny_shakespeare", "transformer_tiny_shakespeare"])
def test_language_model_flagfile_runs_two_levels_with_bits_per_character(name, tmp_path):
    overrides = list(SHORT) + [f"--output_dir={tmp_path}", "--controls=random_prune"]
    if "transformer" in name:
        overrides += ["--embedding_dim=16", "--warmup_iterations=2", "--rewind_iteration=2"]
    else:
        overrides += ["--lstm_units=16"]
    config = parse(name, *overrides)
    assert (config.data.dataset, config.pruning.prune_rate, config.pruning.controls) == (
        "tiny_shakespeare", 0.2, ("random_prune",))
    imp.run_experiment(config)
    with open(os.path.join(tmp_path, name, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["level"], r["variant"]) for r in rows] == [("0", "imp"), ("1", "imp"), ("1", "random_prune")]
    for row in rows:
        bpc = float(row["early_stop_test_bits_per_character"])
        assert bpc == pytest.approx(float(row["early_stop_test_loss"]) / math.log(2))
        assert 1.0 < bpc < 7.0, "a 65-character vocabulary: uniform guessing is log2(65) = 6.02 bits"
    assert float(rows[1]["density"]) < 0.85


def test_an_exported_language_model_serves_character_ids_and_agrees_with_the_trained_model(tmp_path):
    from tf_lottery import export  # pylint: disable=import-outside-toplevel
    from tf_lottery.export.source import ExportError  # pylint: disable=import-outside-toplevel

    config = small_config(tmp_path, **SHAKESPEARE, **TRANSFORMER, iterations=10, eval_every=10, levels=1,
                          experiment_name="lm")
    imp.run_experiment(config)
    experiment_dir = os.path.join(tmp_path, "lm")
    summary = export.export(experiment_dir, level=1, formats=export.FORMATS)
    assert "tflite" in summary["skipped"] and set(summary["formats"]) == {"saved_model", "sparse_saved_model", "ticket"}
    served = tf.saved_model.load(summary["formats"]["saved_model"]["path"]).signatures["serving_default"]
    tokens = data.load("tiny_shakespeare", sequence_length=16).test_images[:4]
    outputs = served(tokens=tf.constant(tokens))
    with Workbench(None, experiment_dir) as bench:
        model = bench.trainer(config).model
        checkpoints.load_weights(model, os.path.join(experiment_dir, "replicate_0", "level_01", "imp",
                                                     "final_weights.npz"))
        masks_lib.apply_masks(model, masks_lib.load(os.path.join(experiment_dir, "replicate_0", "level_01", "imp",
                                                                 "mask.npz")))
        expected = model(tokens, training=False).numpy()
    assert outputs["logits"].shape == (4, 16, 65)
    assert np.abs(outputs["logits"].numpy() - expected).max() <= 1e-5 * np.abs(expected).max()
    assert np.allclose(outputs["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ExportError, match="language models"):
        export.export(experiment_dir, level=1, formats="tflite")
    assert models.spec("transformer_lm") is not None


def test_a_model_that_does_not_fit_the_task_is_one_line(tmp_path):
    from tf_lottery.errors import UsageError  # pylint: disable=import-outside-toplevel
    from tf_lottery.lottery import plan as plan_lib  # pylint: disable=import-outside-toplevel

    with pytest.raises(UsageError, match="needs next-character logits at every position"):
        plan_lib.make_plan(small_config(tmp_path, **{**SHAKESPEARE, "model": "lenet300_100"}))
    with pytest.raises(UsageError, match="lstm_lm cannot be built for mnist"):
        plan_lib.make_plan(small_config(tmp_path, model="lstm_lm", hidden_units=()))
    assert plan_lib.make_plan(small_config(tmp_path, **SHAKESPEARE, **LSTM)).dataset.task == "language_model"


def test_the_best_level_of_a_language_model_is_walked_in_bits_per_character_lower_is_better():
    from tf_lottery.experiment import selection  # pylint: disable=import-outside-toplevel

    def row(level, bpc, accuracy):
        return {"replicate": 0, "level": level, "variant": "imp", "density": 0.8 ** level,
                "early_stop_test_bits_per_character": bpc, "early_stop_test_accuracy": accuracy}

    # Accuracy would call level 3 matching; bits per character rise past 0.02 at level 2.
    rows = [row(0, 2.50, 0.50), row(1, 2.45, 0.50), row(2, 2.53, 0.50), row(3, 2.40, 0.50)]
    task = tasks.get(tasks.LANGUAGE_MODEL)
    assert selection.best_level(rows, None, task=task) == 1
    assert selection.best_level(rows, 0.05, task=task) == 3
    assert selection.best_level(rows) == 3, "classification's rule reads accuracy"


def test_the_stability_line_counts_a_language_models_error_per_character():
    from tf_lottery.training import interpolation  # pylint: disable=import-outside-toplevel

    model = models.build("lstm_lm", (16,), 65, seed=0, embedding_dim=8, lstm_units=(16,))
    splits = data.load("tiny_shakespeare", sequence_length=16)
    images, labels = splits.validation_images[:6], splits.validation_labels[:6]
    line = interpolation.Line(model, masks_lib.get_masks(model))
    loss, error, predicted = line.evaluate(tf.data.Dataset.from_tensor_slices((images, labels)).batch(4))
    logits = model(images, training=False).numpy()
    assert predicted.shape == (6, 16)
    assert error == pytest.approx((logits.argmax(-1) != labels).mean())
    assert loss == pytest.approx(tasks.per_example_loss(tf.constant(labels), tf.constant(logits)).numpy().mean(),
                                 rel=1e-5)
