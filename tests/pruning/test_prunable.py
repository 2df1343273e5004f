"""Prunable weights by path, for every covered layer type: kinds, masks, and zeros that stay zero."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tf_lottery import models, registry
from tf_lottery.config import ConfigError, ExperimentConfig
from tf_lottery.pruning import constraint, masks, prunable, strategies
from tf_lottery.pruning.constraint import MaskConstraint

L = keras.layers


def _float_input(shape):
    return lambda rng, n: rng.normal(size=(n, *shape)).astype(np.float32)


# name: (input shape, input maker, layer factory, {path: kind})
LAYERS = {
    "dense": ((6,), _float_input((6,)), lambda: L.Dense(5, kernel_constraint=MaskConstraint(), name="fc"),
              {"fc/kernel": "dense"}),
    "einsum_dense": ((6,), _float_input((6,)),
                     lambda: L.EinsumDense("ab,bc->ac", output_shape=5, kernel_constraint=MaskConstraint(), name="ein"),
                     {"ein/kernel": "dense"}),
    "conv1d": ((8, 3), _float_input((8, 3)), lambda: L.Conv1D(4, 3, kernel_constraint=MaskConstraint(), name="c1"),
               {"c1/kernel": "conv"}),
    "conv2d": ((6, 6, 2), _float_input((6, 6, 2)),
               lambda: L.Conv2D(4, 3, kernel_constraint=MaskConstraint(), name="c2"), {"c2/kernel": "conv"}),
    "conv3d": ((4, 4, 4, 2), _float_input((4, 4, 4, 2)),
               lambda: L.Conv3D(3, 2, kernel_constraint=MaskConstraint(), name="c3"), {"c3/kernel": "conv"}),
    "depthwise_conv2d": ((6, 6, 3), _float_input((6, 6, 3)),
                         lambda: L.DepthwiseConv2D(3, depth_multiplier=2, depthwise_constraint=MaskConstraint(),
                                                   name="dw"),
                         {"dw/depthwise_kernel": "conv"}),
    "embedding": ((5,), lambda rng, n: rng.integers(0, 12, size=(n, 5)),
                  lambda: L.Embedding(12, 4, embeddings_constraint=MaskConstraint(), name="emb"),
                  {"emb/embeddings": "embedding"}),
    "lstm": ((5, 3), _float_input((5, 3)),
             lambda: L.LSTM(4, kernel_constraint=MaskConstraint(), recurrent_constraint=MaskConstraint(), name="lstm"),
             {"lstm/kernel": "recurrent", "lstm/recurrent_kernel": "recurrent"}),
    "gru": ((5, 3), _float_input((5, 3)),
            lambda: L.GRU(4, kernel_constraint=MaskConstraint(), recurrent_constraint=MaskConstraint(), name="gru"),
            {"gru/kernel": "recurrent", "gru/recurrent_kernel": "recurrent"}),
    "multi_head_attention": ((5, 6), _float_input((5, 6)), None,
                             {f"attn/{p}/kernel": "attention" for p in ("query", "key", "value", "attention_output")}),
}


def _model(name):
    shape, _, make_layer, _ = LAYERS[name]
    inputs = keras.Input(shape, dtype="int32" if name == "embedding" else "float32")
    if name == "multi_head_attention":
        x = L.MultiHeadAttention(2, 3, kernel_constraint=MaskConstraint(), name="attn")(inputs, inputs)
    else:
        x = make_layer()(inputs)
    outputs = L.Dense(1, name="head")(L.Flatten()(x) if len(x.shape) > 2 else x)  # unmasked
    return prunable.attach_masks(keras.Model(inputs, outputs))


def _random_masks(model, seed=0):
    rng = np.random.default_rng(seed)
    return {path: (rng.random(m.shape) < 0.5).astype(np.float32) for path, m in masks.ones_like_model(model).items()}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_paths_kinds_and_masks_beside_their_weights(name):
    model = _model(name)
    weights = prunable.prunable_weights(model)
    assert strategies.weight_kinds(model) == LAYERS[name][3]
    for weight in weights:
        assert weight.variable is getattr(weight.owner, weight.attribute)
        assert weight.mask.name.split(":")[0].endswith(f"{weight.attribute}_mask")
        assert any(v is weight.mask for v in weight.owner.non_trainable_weights), "the mask lives on its owner"
        assert tuple(weight.mask.shape) == tuple(weight.variable.shape) and not weight.mask.trainable
        assert weight.mask.aggregation == tf.VariableAggregation.ONLY_FIRST_REPLICA
    assert len({id(w.mask) for w in weights}) == len(weights), "one mask per weight"
    mask_ids = {id(v) for v in constraint.mask_variables(model)}
    assert [v.name for v in constraint.model_weights(model)] == [v.name for v in model.weights if id(v) not in mask_ids]
    count = len(model.weights)
    prunable.attach_masks(model)
    assert len(mask_ids) == len(weights) and len(model.weights) == count, "attaching twice adds nothing"


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_pruned_weights_are_exactly_zero_after_every_step(name, optimizer):
    model = _model(name)
    applied = _random_masks(model)
    masks.apply_masks(model, applied)
    rng = np.random.default_rng(1)
    x, y = LAYERS[name][1](rng, 16), rng.normal(size=(16, 1)).astype(np.float32)
    opt = keras.optimizers.SGD(0.5) if optimizer == "sgd" else keras.optimizers.Adam(0.05)
    before = masks.prunable_values(model)
    for step in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        for path, value in masks.prunable_values(model).items():
            assert np.all(value[applied[path] == 0] == 0.0), f"{path} step {step}"
    after = masks.prunable_values(model)
    for path, value in after.items():
        assert not np.array_equal(value, before[path]), f"{path}: survivors did not train"


def test_attention_projections_share_one_constraint_but_not_a_mask():
    model = _model("multi_head_attention")
    weights = prunable.prunable_weights(model)
    assert len({id(w.constraint) for w in weights}) == 1, "tf_keras hands its four projections one constraint"
    assert [w.owner.name for w in weights] == ["query", "key", "value", "attention_output"]
    with pytest.raises(ValueError, match="none of them"):
        weights[0].constraint(tf.zeros(weights[0].variable.shape))


def test_recurrent_masks_live_on_the_cell_under_their_attribute_names():
    model = _model("lstm")
    cell = model.get_layer("lstm").cell
    names = sorted(v.name.split(":")[0] for v in cell.non_trainable_weights)
    assert names == ["kernel_mask", "recurrent_kernel_mask"]
    assert [w.owner for w in prunable.prunable_weights(model)] == [cell, cell]


def test_duplicate_paths_and_undeclared_constraints_are_programming_errors():
    inner = keras.Sequential([L.Dense(3, kernel_constraint=MaskConstraint(), name="fc")], name="inner")
    inputs = keras.Input((4,))
    twice = keras.Model(inputs, L.Dense(2, kernel_constraint=MaskConstraint(), name="fc")(inner(inputs)))
    with pytest.raises(ValueError, match="unique, repeated: fc/kernel"):
        prunable.prunable_weights(twice)
    biased = keras.Model(inputs, L.Dense(2, bias_constraint=MaskConstraint(), name="fc")(inputs))
    with pytest.raises(ValueError, match="no prunable-weight declaration covers"):
        prunable.prunable_weights(biased)


def test_legacy_mask_file_keyed_by_layer_name_applies_to_lenet(tmp_path):
    model = models.build("lenet300_100", (28, 28, 1), 10, seed=0)
    legacy = {path.split("/")[0]: m for path, m in _random_masks(model).items()}
    np.savez_compressed(tmp_path / "mask.npz", **{k: m.astype(np.uint8) for k, m in legacy.items()})
    loaded = masks.load(str(tmp_path / "mask.npz"))
    assert list(loaded) == ["fc1/kernel", "fc2/kernel", "output/kernel"]
    masks.apply_masks(model, loaded)
    np.testing.assert_array_equal(masks.get_masks(model)["fc2/kernel"], legacy["fc2"])
    assert np.all(model.get_layer("fc1").kernel.numpy()[legacy["fc1"] == 0] == 0.0)


def _recurrent_model():
    inputs = keras.Input((5, 3))
    x = L.LSTM(4, kernel_constraint=MaskConstraint(), recurrent_constraint=MaskConstraint(), name="lstm")(inputs)
    model = keras.Model(inputs, L.Dense(2, kernel_constraint=MaskConstraint(), name="output")(x))
    return prunable.declare_outputs(prunable.attach_masks(model), ["output"])


def _rates(model, *ignore):
    config = ExperimentConfig().replace(prune_rate=0.2, output_prune_rate=0.05, prune_layers_ignore=ignore)
    return strategies.weight_rates(model, config.pruning)


def test_prune_layers_ignore_names_a_layer_or_a_weight():
    model = _recurrent_model()
    assert _rates(model) == {"lstm/kernel": 0.2, "lstm/recurrent_kernel": 0.2, "output/kernel": 0.05}
    assert _rates(model, "lstm") == {"lstm/kernel": 0.0, "lstm/recurrent_kernel": 0.0, "output/kernel": 0.05}
    assert _rates(model, "lstm/recurrent_kernel", "output") == {
        "lstm/kernel": 0.2, "lstm/recurrent_kernel": 0.0, "output/kernel": 0.0}
    with pytest.raises(ConfigError) as error:
        _rates(model, "lstm/bias")
    assert str(error.value) == ("--prune_layers_ignore: no prunable layer or weight named lstm/bias; "
                                "prunable weights: lstm/kernel, lstm/recurrent_kernel, output/kernel")


def test_declared_outputs_not_the_last_dense_get_kind_output(monkeypatch):
    def two_heads(input_shape, num_classes):
        inputs = keras.Input(input_shape)
        hidden = L.Dense(8, kernel_constraint=MaskConstraint(), name="fc1")(L.Flatten()(inputs))
        logits = L.Dense(num_classes, kernel_constraint=MaskConstraint(), name="logits")(hidden)
        aux = L.Dense(1, kernel_constraint=MaskConstraint(), name="aux")(hidden)  # the last Dense, not an output
        return keras.Model(inputs, [logits, aux])

    monkeypatch.setattr(models, "_MODELS", registry.Registry[models.ModelSpec]("model"))
    models.register("two_heads", outputs=("logits",))(two_heads)
    model = models.build("two_heads", (4,), 3)
    assert prunable.output_layers(model) == ("logits",)
    assert strategies.weight_kinds(model) == {"fc1/kernel": "dense", "logits/kernel": "output", "aux/kernel": "dense"}
    models.register("misnamed", outputs=("output",))(two_heads)
    with pytest.raises(ValueError, match="no output layer named output"):
        models.build("misnamed", (4,), 3)


@pytest.mark.parametrize("name,shape", [("lenet300_100", (28, 28, 1)), ("resnet18", (32, 32, 3))])
def test_model_weights_keep_the_order_of_existing_models(name, shape):
    model = models.build(name, shape, 10, seed=0)
    expected = [v.name for v in model.weights if not v.name.split(":")[0].endswith("_mask")]
    assert [v.name for v in constraint.model_weights(model)] == expected
    assert len(expected) == len(model.weights) - len(prunable.prunable_weights(model))
    assert models.spec(name).outputs == ("output",) and prunable.output_layers(model) == ("output",)
