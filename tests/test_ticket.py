"""The untrained ticket: one file that rebuilds the masked model, ready to train."""

import glob
import json
import os
import shutil

import numpy as np
import pytest
import tf_keras as keras

import tf_lottery
from tf_lottery import export, ticket as ticket_lib
from tf_lottery.errors import UsageError
from tf_lottery.experiment.reader import Experiment
from tf_lottery.pruning import constraint, masks as masks_lib, prunable
from tf_lottery.training import checkpoints

LEVEL = 2


@pytest.fixture(scope="module")
def ticket_path(pruned_experiment, tmp_path_factory):
    output = tmp_path_factory.mktemp("ticket")
    export.export(pruned_experiment, level=LEVEL, formats=["ticket"], output=str(output))
    return str(output / "ticket.npz")


def _theta0_and_mask(experiment_dir, level=LEVEL):
    paths = Experiment.open(experiment_dir).paths
    return checkpoints.read_weights(paths.theta_init(0)), masks_lib.load(paths.run(0, level, "imp").mask)


def test_ticket_file_holds_the_survivors_at_theta0_masks_and_what_made_them(pruned_experiment, ticket_path):
    theta0, mask = _theta0_and_mask(pruned_experiment)
    ticket = ticket_lib.read_ticket(ticket_path)
    header = ticket.header
    assert (header["model"], header["input_shape"], header["num_classes"]) == ("mlp", [28, 28, 1], 10)
    assert header["model_options"] == {"hidden_units": [32]}
    assert (header["level"], header["variant"], header["initial_weights"]) == (LEVEL, "imp", "theta_0")
    assert "--prune_rate=0.8" in header["flags"]
    assert set(ticket.masks) == set(mask)
    for name in mask:
        np.testing.assert_array_equal(ticket.masks[name], mask[name])
    assert ticket.density == pytest.approx(masks_lib.density(mask))
    # Weights in model order: fc1 kernel, fc1 bias, output kernel, output bias.
    np.testing.assert_array_equal(ticket.weights[0], theta0[0] * mask["fc1/kernel"])
    np.testing.assert_array_equal(ticket.weights[1], theta0[1])
    np.testing.assert_array_equal(ticket.weights[2], theta0[2] * mask["output/kernel"])


def test_load_ticket_rebuilds_the_masked_model(pruned_experiment, ticket_path):
    theta0, mask = _theta0_and_mask(pruned_experiment)
    model = tf_lottery.load_ticket(ticket_path)
    np.testing.assert_array_equal(model.get_layer("fc1").kernel.numpy(), theta0[0] * mask["fc1/kernel"])
    np.testing.assert_array_equal(masks_lib.get_masks(model)["output/kernel"], mask["output/kernel"])
    np.testing.assert_array_equal(model.get_layer("output").bias.numpy(), theta0[3])


def _train(model, classes, steps=20):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(steps * 16, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, classes, size=steps * 16)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {v.name: v.numpy() for v in constraint.model_weights(model)}
    history = model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    return before


def test_a_loaded_ticket_trains_and_keeps_its_mask(ticket_path):
    model = tf_lottery.load_ticket(ticket_path)
    masks = masks_lib.get_masks(model)
    before = _train(model, 10)
    for weight in prunable.prunable_weights(model):
        kernel = weight.variable.numpy()
        assert np.all(kernel[masks[weight.path] == 0] == 0.0), weight.path
        alive = masks[weight.path] > 0
        assert np.any(kernel[alive] != before[weight.variable.name][alive]), "survivors train"
    np.testing.assert_array_equal(masks_lib.get_masks(model)["fc1/kernel"], masks["fc1/kernel"])


def test_a_new_output_layer_for_another_class_count(pruned_experiment, ticket_path):
    theta0, mask = _theta0_and_mask(pruned_experiment)
    model = tf_lottery.load_ticket(ticket_path, num_classes=3, seed=1)
    output = model.get_layer("output")
    assert model.output_shape == (None, 3) and tuple(output.kernel.shape) == (32, 3)
    assert np.all(masks_lib.get_masks(model)["output/kernel"] == 1.0)  # the new head is dense
    assert np.count_nonzero(output.kernel.numpy()) == 32 * 3
    np.testing.assert_array_equal(model.get_layer("fc1").kernel.numpy(), theta0[0] * mask["fc1/kernel"])
    _train(model, 3)
    assert np.all(model.get_layer("fc1").kernel.numpy()[mask["fc1/kernel"] == 0] == 0.0)


def test_a_ticket_with_masks_keyed_by_layer_name_still_loads(pruned_experiment, ticket_path, tmp_path):
    """Tickets written before masks were keyed by weight path name the layer alone ('fc1')."""
    theta0, mask = _theta0_and_mask(pruned_experiment)
    ticket = ticket_lib.read_ticket(ticket_path)
    legacy = str(tmp_path / "legacy.npz")
    ticket_lib.save_ticket(legacy, ticket.header, ticket.weights, ticket.weight_names,
                           {path.split("/")[0]: m for path, m in ticket.masks.items()})
    with np.load(legacy) as data:
        assert "mask/fc1" in data.files and "mask/fc1/kernel" not in data.files
    assert sorted(ticket_lib.read_ticket(legacy).masks) == ["fc1/kernel", "output/kernel"]
    model = tf_lottery.load_ticket(legacy)
    np.testing.assert_array_equal(masks_lib.get_masks(model)["fc1/kernel"], mask["fc1/kernel"])
    np.testing.assert_array_equal(model.get_layer("fc1").kernel.numpy(), theta0[0] * mask["fc1/kernel"])


def test_a_rewound_experiment_exports_theta_k(pruned_experiment, tmp_path):
    # A copy of the experiment that says it rewound to iteration 20, with a θk file to prove which is
    # read; its runs' run.json are removed, as in experiments written before runs recorded their start.
    copy = str(tmp_path / "rewound")
    shutil.copytree(pruned_experiment, copy)
    for spec in glob.glob(os.path.join(copy, "replicate_0", "level_*", "imp", "run.json")):
        os.remove(spec)
    with open(os.path.join(copy, "config.json")) as f:
        config = json.load(f)
    config["config"]["rewind_iteration"] = 20
    with open(os.path.join(copy, "config.json"), "w") as f:
        json.dump(config, f)
    paths = Experiment.open(copy).paths
    shutil.copy(paths.run(0, 0, "imp").final_weights, paths.theta_rewind(0))
    theta_k = checkpoints.read_weights(paths.theta_rewind(0))
    _, mask = _theta0_and_mask(copy, level=1)
    summary = export.export(copy, level=1, formats="ticket", output=str(tmp_path / "out"))
    assert summary["formats"]["ticket"]["initial_weights"] == "theta_rewind"
    ticket = ticket_lib.read_ticket(summary["formats"]["ticket"]["path"])
    assert ticket.header["rewind_iteration"] == 20
    np.testing.assert_array_equal(ticket.weights[0], theta_k[0] * mask["fc1/kernel"])
    # Level 0 was trained from θ0 even in a rewound experiment.
    values, _, source = Experiment.open(copy).initial_weights(0, 0, "imp")
    assert source == "theta_0"


def test_bad_tickets_give_one_line_errors(pruned_experiment, ticket_path, tmp_path):
    with pytest.raises(ticket_lib.TicketError, match="no ticket file"):
        tf_lottery.load_ticket(str(tmp_path / "missing.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ticket_lib.TicketError, match="not a tf_lottery ticket"):
        tf_lottery.load_ticket(str(tmp_path / "junk.npz"))
    with pytest.raises(ticket_lib.TicketError, match="num_classes"):
        ticket_lib.load_ticket(ticket_path, num_classes=0)
    with pytest.raises(UsageError, match="replicate 0 level 1 reinit .* has not finished"):
        Experiment.open(pruned_experiment).initial_weights(0, 1, "reinit")
    legacy = str(tmp_path / "legacy")  # a reinit run from before runs stored their initial weights
    shutil.copytree(pruned_experiment, legacy)
    shutil.copytree(os.path.join(legacy, "replicate_0", "level_01", "imp"), os.path.join(legacy, "replicate_0", "level_01", "reinit"))
    os.remove(os.path.join(legacy, "replicate_0", "level_01", "reinit", "run.json"))
    with pytest.raises(UsageError, match="train it again with tf_lottery.branch --branch=reinit"):
        Experiment.open(legacy).initial_weights(0, 1, "reinit")
