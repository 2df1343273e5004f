"""Both SavedModels serve every prunable weight type exactly: masks folded, survivors rebuilt."""

import os
import types

import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.data.datasets import DatasetInfo
from tf_lottery.export import saved_model as dense_export, sparse
from tf_lottery.pruning import constraint, masks, prunable

# tests/pruning/test_prunable.py's tiny one-layer models; the MLP and CNN exports are in test_export.py.
from pruning.test_prunable import LAYERS, _model  # pylint: disable=wrong-import-order


def _run(name):
    """A stand-in for a finished run: a pruned model and the dataset statistics export reads."""
    model = _model(name)
    rng = np.random.default_rng(0)
    run_masks = {path: (rng.random(m.shape) < 0.05).astype(np.float32) for path, m in masks.ones_like_model(model).items()}
    masks.apply_masks(model, run_masks)
    shape = LAYERS[name][0]
    # Embedding ids must reach the layer unchanged: mean 0 and std 1/255 make preprocessing the identity.
    mean, std = ((0.0, 1 / 255) if name == "embedding" else (0.5, 0.25))
    info = DatasetInfo("random", shape, 1, (mean,) * shape[-1], (std,) * shape[-1])
    return types.SimpleNamespace(model=model, masks=run_masks, experiment=types.SimpleNamespace(dataset=info))


@pytest.mark.parametrize("name", ["conv1d", "depthwise_conv2d", "embedding", "lstm", "multi_head_attention"])
def test_sparse_and_dense_exports_match_the_masked_model(name, tmp_path):
    run = _run(name)
    plain = dense_export.plain_model(run.model)
    assert not constraint.mask_variables(plain) and not prunable.prunable_weights(plain)
    slots = prunable.slots_by_path(plain)
    for path, mask in run.masks.items():
        folded = getattr(slots[path].owner, slots[path].attribute).numpy()
        np.testing.assert_array_equal(folded != 0, mask != 0)
    images = np.random.default_rng(1).integers(0, 12, size=(4, *LAYERS[name][0])).astype(np.uint8)
    expected = dense_export.serving_model(run)(images).numpy()
    encodings = sparse.export_sparse_saved_model(run, str(tmp_path / "sparse"), {})
    assert list(encodings) == list(run.masks) and "dense" not in encodings.values()
    served = tf.saved_model.load(str(tmp_path / "sparse")).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_array_equal(served["logits"].numpy(), expected)
    reader = tf.train.load_checkpoint(os.path.join(tmp_path, "sparse", "variables", "variables"))
    stored = [tuple(shape) for shape in reader.get_variable_to_shape_map().values()]
    assert not any(tuple(m.shape) in stored for m in run.masks.values()), "a pruned weight was stored dense"
