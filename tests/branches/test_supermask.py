"""The supermask branch: the untrained supermask is θ0 (or signed constants) under the criterion's
mask, evaluated as by hand; the learned one never changes its frozen weights, its straight-through
gradient reaches the scores, dynamic scaling scales as stated, it resumes to the same numbers; a
rerun trains nothing; bad options and BatchNorm models are refused in one line."""

import dataclasses
import os

import numpy as np
import pytest

from branch_helpers import deterministic_parent, digest, run_branch

from stop_hook import StopAt
from tf_lottery import branches, data
from tf_lottery.branches import supermask as branch_lib
from tf_lottery.branches.base import Cell
from tf_lottery.data import pipeline
from tf_lottery.errors import UsageError
from tf_lottery.experiment import files
from tf_lottery.experiment.reader import Experiment
from tf_lottery.pruning import constraint, prunable
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training import checkpoints
from tf_lottery.training import run as run_lib
from tf_lottery.training import supermask as supermask_lib
from tf_lottery.training.workbench import Workbench

ARGS = ("--branch=supermask", "--levels=1", "--noprogress")
CELL = Cell(0, 1, "imp")
LEARNED = Cell(0, 1, "imp", part="learned")


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished deterministic experiment (levels 0-1), both supermasks at level 1 with θ0 and the
    untrained one with signed constants."""
    with deterministic_parent(tmp_path_factory.mktemp("supermask")) as (root, _):
        assert run_branch(f"--experiment_dir={root}", *ARGS, "--supermask=untrained,learned") == 0
        assert run_branch(f"--experiment_dir={root}", *ARGS, "--weights=signed_constant") == 0
        yield root


def branch_of(root, **options):
    return branches.get("supermask")(Experiment.open(root), branch_lib.SupermaskOptions(**options))


def rows(root, run, weights="init"):
    return [r for r in Experiment.open(root).branch_table("supermask") if r["run"] == run and r["weights"] == weights]


def by_name(path):
    return dict(zip(files.read_weight_names(path), files.read_weights(path)))


def hand_mask(initial, final, keep):
    """large_final_same_sign by hand: the largest |w_f|, the sign-flipped ones last, ties by position."""
    flipped = np.sign(initial.ravel()) != np.sign(final.ravel())
    order = np.lexsort((-np.abs(final.ravel()), flipped))
    mask = np.zeros(initial.size, np.float32)
    mask[order[:keep]] = 1
    return mask.reshape(initial.shape)


def hand_accuracy(experiment, weights):
    """Test accuracy of the MLP (flatten, relu hidden layer, linear output) computed with numpy."""
    config = experiment.config
    splits = data.load(config.data.dataset, config.data.data_dir, config.data.validation_size, False)
    x = pipeline.preprocess_fn(splits.info)(splits.test_images).numpy().reshape(len(splits.test_labels), -1)
    hidden = np.maximum(x @ weights["fc1/kernel:0"] + weights["fc1/bias:0"], 0)
    logits = hidden @ weights["output/kernel:0"] + weights["output/bias:0"]
    return float(np.mean(np.argmax(logits, -1) == splits.test_labels))


@pytest.mark.parametrize("weights", ["init", "signed_constant"])
def test_the_untrained_supermask_is_theta_0_under_the_criterions_mask(parent, weights):
    experiment = Experiment.open(parent)
    theta_path = experiment.paths.theta_init(0)
    theta = by_name(theta_path)
    final = dict(zip(files.read_weight_names(theta_path), experiment.final_weights(0, 0, "imp")))
    level = experiment.masks(0, 1, "imp")
    folder = branch_of(parent, weights=weights).folder(CELL).directory
    stored = files.read_masks(os.path.join(folder, branch_lib.UNTRAINED_MASK))
    network = dict(theta)
    for path, kind in (("fc1/kernel", "dense"), ("output/kernel", "output")):
        keep = int(np.count_nonzero(level[path]))  # the parent's per-layer count at level 1
        assert keep == int(np.floor(level[path].size * (1 - experiment.config.pruning.rate_for(kind)) + 0.5))
        np.testing.assert_array_equal(stored[path], hand_mask(theta[f"{path}:0"], final[f"{path}:0"], keep))
        value = theta[f"{path}:0"]
        if weights == "signed_constant":
            value = np.float32(np.std(value)) * np.where(value < 0, -1, 1).astype(np.float32)
        network[f"{path}:0"] = value * stored[path]
    [row] = rows(parent, "untrained", weights)
    assert row["density"] == row["mask_density"] == pytest.approx(experiment.result(0, 1, "imp")["density"])
    assert row["iterations_trained"] == 0 and row["iterations_spent"] == experiment.iterations_spent(0, 0, "imp")
    assert row["final_test_accuracy"] == pytest.approx(hand_accuracy(experiment, network), abs=1.5e-4)  # 1 example
    assert row["final_test_accuracy"] > 0.2, "the mask alone makes the untrained network better than chance"


def test_signed_constants_are_alpha_times_the_sign_of_theta_0(parent):
    experiment = Experiment.open(parent)
    config = branch_of(parent).config
    with Workbench(None, parent) as bench:
        model = bench.trainer(config).model
        theta = experiment.theta_init(0)
        frozen = supermask_lib.frozen_values(model, theta, "signed_constant")
        for variable, value in zip(constraint.model_weights(model), theta):
            got = frozen[id(variable)]
            if variable.name.endswith("kernel:0"):
                alpha = np.float32(np.std(value))  # the weight's θ0 standard deviation
                assert set(np.unique(np.abs(got))) == {alpha} and alpha > 0, variable.name
                np.testing.assert_array_equal(np.sign(got), np.where(value < 0, -1, 1))  # θ0's signs, 0 as +
            else:  # biases keep θ0
                np.testing.assert_array_equal(got, value)


def test_the_learned_supermask_never_changes_its_frozen_weights_and_trains_its_scores(parent):
    experiment = Experiment.open(parent)
    branch = branch_of(parent, supermask=("learned",))
    run = branch.folder(CELL).run("imp_learned")
    theta, final = by_name(experiment.paths.theta_init(0)), by_name(run.final_weights)
    level = experiment.masks(0, 1, "imp")
    assert set(final) == set(theta) | {f"{p}_score:0" for p in level}
    for name, value in theta.items():  # every weight: θ0, the cell's pruned ones at 0, bit for bit
        mask = level.get(name[: -len(":0")], 1.0)
        np.testing.assert_array_equal(final[name], value * mask, err_msg=name)
    for path, mask in level.items():
        score = final[f"{path}_score:0"]
        assert np.count_nonzero(score[mask > 0]) > 0.9 * np.count_nonzero(mask), path  # trained
        assert np.all(score[mask == 0] == 0), path  # outside the cell's mask no gradient reaches them
    [row] = rows(parent, "learned")
    kept = sum(np.sum(mask / (1 + np.exp(-final[f"{p}_score:0"].astype(np.float64)))) for p, mask in level.items())
    assert row["mask_density"] == pytest.approx(kept / sum(m.size for m in level.values()))
    assert 0 < row["mask_density"] < row["density"] < 1
    result = files.read_json(run.result)
    assert row["final_test_accuracy"] == result["sampled_test_accuracy"] > 0.3
    assert row["iterations_trained"] == 60 and row["iterations_spent"] == 120 and row["supermask_learning_rate"] == 100
    record = files.read_json(run.spec)["config"]
    assert (record["optimizer"], record["learning_rate"], record["momentum"], record["weight_decay"]) == \
           ("momentum", 100.0, 0.9, 0.0)


def test_the_straight_through_gradient_reaches_the_scores(parent):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    branch = branch_of(parent, supermask=("learned",))
    [spec] = branch.runs(LEARNED)
    with Workbench(None, parent) as bench:
        trainer = bench.trainer(spec.config, spec.model_wrap)
        model, scores = trainer.model, supermask_lib.scores(trainer.model)
        assert [id(v) for v in model.trainable_variables] == [id(v) for v in scores.values()], "only scores train"
        checkpoints.assign_weights(model, files.read_weights(spec.init.file))
        masks_lib.apply_masks(model, spec.masks)
        splits = bench.splits(spec.config)
        images = pipeline.preprocess_fn(splits.info)(splits.train_images[:256])
        with tf.GradientTape() as tape:
            logits = trainer.forward_model(images, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                splits.train_labels[:256], logits, from_logits=True))
        gradients = tape.gradient(loss, list(scores.values()))
    for path, gradient in zip(scores, gradients):
        assert gradient is not None and np.count_nonzero(gradient.numpy()[spec.masks[path] > 0]) > 0, path
        assert np.all(gradient.numpy()[spec.masks[path] == 0] == 0), path


def test_dynamic_scaling_scales_each_layer_by_its_size_over_its_kept_count(parent):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    [spec] = branch_of(parent, supermask=("learned",), dynamic_scaling=True).runs(LEARNED)
    rng = np.random.default_rng(0)
    with Workbench(None, parent) as bench:
        trainer = bench.trainer(spec.config, spec.model_wrap)
        model = trainer.model
        _, values = supermask_lib.initial_values(model, Experiment.open(parent).theta_init(0), "init", 0.0)
        checkpoints.assign_weights(model, values)
        masks_lib.apply_masks(model, spec.masks)
        for score in supermask_lib.scores(model).values():
            score.assign(rng.normal(size=score.shape).astype(np.float32))
        supermask_lib.state(trainer.forward_model).threshold.assign(True)  # the mask sigmoid(s) > 0.5
        x = rng.normal(size=(8, 784)).astype(np.float32)
        logits = trainer.forward_model(tf.constant(x.reshape(8, 28, 28, 1)), training=False).numpy()
        supermask_lib.state(trainer.forward_model).threshold.assign(False)
        layers = {w.path: (w.variable.numpy(), w.layer.bias.numpy()) for w in prunable.prunable_weights(model)}
        chosen = {p: (s.numpy() > 0) * spec.masks[p] for p, s in supermask_lib.scores(model).items()}
    scaled = {p: layers[p][0] * m * (m.size / m.sum()) for p, m in chosen.items()}
    hidden = np.maximum(x @ scaled["fc1/kernel"] + layers["fc1/kernel"][1], 0)
    expected = hidden @ scaled["output/kernel"] + layers["output/kernel"][1]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_the_learned_supermask_refuses_batchnorm_in_one_line():
    from tf_lottery import models  # pylint: disable=import-outside-toplevel

    with pytest.raises(UsageError, match="frozen BatchNormalization") as error:
        supermask_lib.check_supported(models.spec("resnet20").factory((32, 32, 3), 10))
    assert "\n" not in str(error.value)


def test_a_learned_supermask_resumes_to_the_same_numbers(parent, tmp_path):
    branch = branch_of(parent, supermask=("learned",))
    [spec] = branch.runs(LEARNED)
    whole = spec.paths
    spec = dataclasses.replace(spec, directory=str(tmp_path / "resumed"))
    with Workbench(None, parent) as bench:
        with pytest.raises(KeyboardInterrupt):
            run_lib.train(spec, bench, branch.hooks(spec) + [StopAt(30)])
        assert os.path.isdir(spec.paths.checkpoints) and not os.path.exists(spec.paths.result)
        result = run_lib.train(spec, bench, branch.hooks(spec))
    expected = files.read_json(whole.result)
    assert {k: v for k, v in result.items() if k != "train_seconds"} == \
           {k: v for k, v in expected.items() if k != "train_seconds"}
    for a, b in zip(files.read_weights(spec.paths.final_weights), files.read_weights(whole.final_weights)):
        np.testing.assert_array_equal(a, b)


def test_a_second_identical_call_trains_nothing(parent):
    before = digest(parent)
    assert run_branch(f"--experiment_dir={parent}", *ARGS, "--supermask=untrained,learned") == 0
    assert digest(parent) == before


@pytest.mark.parametrize("args, message", [
    (("--supermask=trained",), "--supermask: expected some of untrained, learned"),
    (("--supermask=learned,learned",), "--supermask: expected some of untrained, learned, each once"),
    (("--supermask_learning_rate=0",), "--supermask_learning_rate: must be > 0"),
    (("--supermask_iterations=-1",), "--supermask_iterations: must be >= 0"),
    (("--weights=random",), "--weights"),
    (("--supermask_criterion=largest",), "--supermask_criterion"),
])
def test_a_bad_option_is_one_line_and_exit_2(parent, capsys, args, message):
    code = run_branch(f"--experiment_dir={parent}", *ARGS, *args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("tf_lottery.branch: error: ") and err.count("\n") == 1, err
    assert message in err, err
