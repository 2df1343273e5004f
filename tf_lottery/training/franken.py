"""A Frankenmodel (PackNet, Mallya & Lazebnik 2018): earlier tasks' weights frozen, a new task in those they freed.

`franken_wrap()` is a loop.ModelWrap, so each new task trains as an ordinary run of
`run.train` (checkpointed, resumable, metrics.csv). The masked model is the new task's
network: its prunable kernels hold the task's *own* weights (the run's mask is the
task's share, so MaskConstraint keeps them zero everywhere else), its output layer is
the task's own head. The wrap's build step

  - freezes what the earlier tasks' networks use: every variable of the shared layers
    (all but the output layer) except the prunable kernels: biases are moved to the
    layer's non-trainable weights, layers without prunable weights (BatchNorm) get
    `trainable = False` (so they also normalise with their stored statistics). The
    trainer's step and its weight decay see only `model.trainable_variables`: the
    task's own kernels and head, never an earlier task's value;
  - adds non-trainable variables to the masked model, after its own (weights files
    and checkpoints hold them, so a run's final_weights.npz is the whole Frankenmodel):
    per shared prunable weight '<path>_frozen' (the earlier tasks' weights, each at the
    positions it owns, zero elsewhere) and '<path>_owner' (the owning task's index,
    -1 where no earlier task owns the position), and per earlier task s its head,
    'output_task<s>/kernel', '/mask' and '/bias' (the masked output layer it trained);
  - clones the model into the forward model of the current task t: each shared
    prunable layer computes with frozen + own, the head gives t's logits ('separate')
    or t's columns followed by every earlier task's ('shared': an output layer
    extended with t's classes, trained with a softmax over all its columns).

`view_model(model, s)` is task s's network in the same weights: the kernels at the
positions of tasks 0..s only, task s's head; task 0's view computes what the parent's
ticket computes, op for op. `state_of` / `initial_values` carry the frozen part from
one task's finished model to the next task's run.
"""

import dataclasses
import os
import shutil
import tempfile
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery.data import pipeline
from tf_lottery.errors import UsageError
from tf_lottery.export import saved_model as dense_export
from tf_lottery.export.source import ExportCheckError
from tf_lottery.pruning import constraint, prunable, strategies
from tf_lottery.training.loop import ModelWrap

HEADS = ("separate", "shared")
COLUMNS = ("own", "train", "all")  # a view's logits: its task's; the current task's then earlier; all in task order
_PARTS = "_tf_lottery_franken_parts"  # the FrankenParts on the masked model (untracked)


@dataclasses.dataclass(frozen=True, eq=False)
class FrankenParts:
    """What the wrap added to a masked model: the current task's index and the frozen variables."""

    task: int
    head: str
    output: str  # the output layer's name
    frozen: Mapping[str, tf.Variable]  # shared prunable path -> earlier tasks' weights
    owner: Mapping[str, tf.Variable]  # shared prunable path -> owning task (-1: none before the current one)
    heads: Tuple[Tuple[tf.Variable, tf.Variable, tf.Variable], ...]  # (kernel, mask, bias) of each earlier task

    def variables(self) -> List[tf.Variable]:
        return [*self.frozen.values(), *self.owner.values(), *(v for head in self.heads for v in head)]


@dataclasses.dataclass
class FrozenState:
    """What the next task inherits, as arrays: every task's weights so far, and the shared layers' others."""

    frozen: Dict[str, np.ndarray]
    owner: Dict[str, np.ndarray]
    heads: List[Tuple[np.ndarray, np.ndarray, np.ndarray]]
    shared: Dict[Tuple[str, int], np.ndarray]  # (layer name, index among its weights) -> value

    @property
    def tasks(self) -> int:
        return len(self.heads)


def parts(model) -> FrankenParts:
    return getattr(model, _PARTS, None)


def output_layer(model) -> str:
    """The one output layer's name; refuses models the wrap cannot split into shared layers and a head."""
    outputs = prunable.output_layers(model)
    if len(outputs) != 1:
        raise UsageError(f"branch franken: model {model.name} has {len(outputs)} output layers; it needs one")
    layer = next(l for l in constraint.walk_layers(model) if l.name == outputs[0])
    if not isinstance(layer, keras.layers.Dense) or not layer.use_bias:
        raise UsageError(f"branch franken: the output layer {layer.name} of {model.name} is not a Dense layer "
                         "with a bias")
    for other in constraint.walk_layers(model):
        if any(w.owner is not other for w in prunable.layer_weights(other)):
            raise UsageError(f"branch franken: layer {other.name} ({type(other).__name__}) keeps its prunable "
                             "weights in sublayers; the Frankenmodel needs layers that read them themselves")
    return outputs[0]


def check_supported(model):
    output_layer(model)


def _own_weights(layer) -> List[tf.Variable]:
    masks = {id(m) for c in constraint.mask_constraints(layer) for m in c.masks}
    return [v for v in layer.weights if id(v) not in masks]


def _freeze_shared(model, output: str):
    """Makes every variable of the shared layers but the prunable kernels non-trainable (see the module doc)."""
    for layer in constraint.walk_layers(model):
        if layer.name == output:
            continue
        kernels = {id(w.variable) for w in prunable.layer_weights(layer)}
        if not kernels:
            layer.trainable = False  # BatchNorm: also normalises with its moving statistics from now on
            continue
        # Keras fixes trainability per variable when it is created; moving the variable between the
        # layer's own lists is the one way to freeze a bias and train its kernel. Inserted first, so
        # layer.weights (and every weights file) keeps its order.
        # pylint: disable=protected-access
        frozen = [v for v in layer._trainable_weights if id(v) not in kernels]
        layer._trainable_weights[:] = [v for v in layer._trainable_weights if id(v) in kernels]
        layer._non_trainable_weights[:0] = frozen


def _add_frozen(model, task: int, head: str, output: str, head_classes: Sequence[int]) -> FrankenParts:
    def frozen_variable(name, shape, initializer="zeros"):
        return model.add_weight(name=name, shape=shape, dtype="float32", initializer=initializer, trainable=False,
                                experimental_autocast=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    frozen, owner = {}, {}
    for weight in prunable.prunable_weights(model):
        if weight.layer.name != output:
            frozen[weight.path] = frozen_variable(f"{weight.path}_frozen", weight.variable.shape)
            owner[weight.path] = frozen_variable(f"{weight.path}_owner", weight.variable.shape,
                                                 keras.initializers.Constant(-1.0))
    out = next(l for l in constraint.walk_layers(model) if l.name == output)
    features = int(out.kernel.shape[0])
    heads = tuple((frozen_variable(f"{output}_task{s}/kernel", (features, n)),
                   frozen_variable(f"{output}_task{s}/mask", (features, n)),
                   frozen_variable(f"{output}_task{s}/bias", (n,))) for s, n in enumerate(head_classes))
    return FrankenParts(task, head, output, frozen, owner, heads)


class FrankenLayer(keras.layers.Layer):
    """A shared prunable layer called with one task's view of its kernels (the layer's own call()
    computes, with the view's kernels in place of its variables for the duration of the call)."""

    def __init__(self, inner: keras.layers.Layer, slots, view: int, current: int):
        super().__init__(name=f"franken_{inner.name}_view{view}", dtype=inner.dtype_policy, trainable=False)
        object.__setattr__(self, "_inner", inner)  # untracked: the masked model owns it
        object.__setattr__(self, "_slots", tuple(slots))  # (attribute, own variable, frozen, owner)
        self.view, self.current = view, current

    def _kernel(self, own, frozen, owner):
        own = tf.convert_to_tensor(own)
        frozen = tf.cast(tf.convert_to_tensor(frozen), own.dtype)
        if self.view == self.current:
            return frozen + own  # disjoint supports: each position is one task's value, exactly
        later = tf.convert_to_tensor(owner) > float(self.view)
        return tf.where(later, tf.zeros_like(frozen), frozen)

    def call(self, inputs):
        inner = self._inner
        try:
            for attribute, own, frozen, owner in self._slots:
                object.__setattr__(inner, attribute, self._kernel(own, frozen, owner))
            return inner.call(inputs)
        finally:
            for attribute, own, _, _ in self._slots:
                object.__setattr__(inner, attribute, own)

    def compute_output_shape(self, input_shape):
        return self._inner.compute_output_shape(input_shape)


class FrankenHead(keras.layers.Layer):
    """The output layer of a view: its task's head, or several tasks' heads side by side."""

    def __init__(self, inner: keras.layers.Layer, heads, view: int, current: int, columns: str):
        super().__init__(name=f"franken_{inner.name}_view{view}_{columns}", dtype=inner.dtype_policy,
                         trainable=False)
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_heads", tuple(heads))
        self.view, self.current, self.columns = view, current, columns

    def _head(self, inputs, task: int):
        inner = self._inner
        if task == self.current:
            return inner.call(inputs)
        kernel, _, bias = self._heads[task]
        own_kernel, own_bias = inner.kernel, inner.bias
        dtype = tf.convert_to_tensor(own_kernel).dtype
        try:
            object.__setattr__(inner, "kernel", tf.cast(tf.convert_to_tensor(kernel), dtype))
            object.__setattr__(inner, "bias", tf.cast(tf.convert_to_tensor(bias), dtype))
            return inner.call(inputs)
        finally:
            object.__setattr__(inner, "kernel", own_kernel)
            object.__setattr__(inner, "bias", own_bias)

    def call(self, inputs):
        if self.columns == "own":
            return self._head(inputs, self.view)
        order = ([self.view] + list(range(self.view)) if self.columns == "train" else list(range(self.view + 1)))
        return tf.concat([self._head(inputs, s) for s in order], axis=-1)

    def compute_output_shape(self, input_shape):
        return self._inner.compute_output_shape(input_shape)


def view_model(model, view: int, columns: str = "own") -> keras.Model:
    """Task `view`'s network in the masked model's weights (a Frankenmodel the wrap built)."""
    found = parts(model)
    if not 0 <= view <= found.task or columns not in COLUMNS:
        raise ValueError(f"no view {view} ({columns}) of a Frankenmodel of task {found.task}")
    slots = {}
    for weight in prunable.prunable_weights(model):
        if weight.path in found.frozen:
            slots.setdefault(weight.layer.name, []).append(
                (weight.attribute, weight.variable, found.frozen[weight.path], found.owner[weight.path]))

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        if layer.name == found.output:
            return FrankenHead(layer, found.heads, view, found.task, columns)
        return FrankenLayer(layer, slots[layer.name], view, found.task) if layer.name in slots else layer

    return keras.models.clone_model(model, clone_function=clone)


def franken_wrap(head: str, head_classes: Sequence[int]) -> ModelWrap:
    """The ModelWrap training task len(head_classes) over the earlier tasks' frozen weights;
    head_classes: each earlier task's class count, task 0 (the parent's) first."""
    if head not in HEADS:
        raise ValueError(f"head: expected one of {', '.join(HEADS)}, got {head!r}")
    task = len(head_classes)

    def build(model):
        output = output_layer(model)
        _freeze_shared(model, output)
        object.__setattr__(model, _PARTS, _add_frozen(model, task, head, output, head_classes))
        return view_model(model, task, "train" if head == "shared" else "own")

    return ModelWrap(key=("franken", head, tuple(int(n) for n in head_classes)), build=build)


# The frozen part as arrays: from one task's finished model to the next task's start ---------------

def _shared_layers(model, output: str):
    return [layer for layer in constraint.walk_layers(model) if layer.name != output]


def state_of(model) -> FrozenState:
    """What the next task inherits from `model` (a plain ticket: task 0; or a Frankenmodel), its
    weights and masks set: every task's weights at the positions it owns, their heads, the shared
    layers' other variables."""
    found = parts(model)
    output = found.output if found else output_layer(model)
    task = found.task if found else 0
    frozen, owner, heads, shared = {}, {}, [], {}
    for weight in prunable.prunable_weights(model):
        mask = weight.mask.numpy()
        value = weight.variable.numpy() * mask
        if weight.layer.name == output:
            continue
        if found:
            before = found.frozen[weight.path].numpy()
            frozen[weight.path] = np.where(mask > 0, value, before)
            owner[weight.path] = np.where(mask > 0, float(task), found.owner[weight.path].numpy()).astype(np.float32)
        else:
            frozen[weight.path] = value
            owner[weight.path] = np.where(mask > 0, 0.0, -1.0).astype(np.float32)
    if found:
        heads = [tuple(v.numpy() for v in head) for head in found.heads]
    out = next(l for l in constraint.walk_layers(model) if l.name == output)
    [out_weight] = [w for w in prunable.layer_weights(out) if w.attribute == "kernel"]
    out_mask = out_weight.mask.numpy()
    heads.append((out.kernel.numpy() * out_mask, out_mask, out.bias.numpy()))
    for layer in _shared_layers(model, output):
        kernels = {id(w.variable) for w in prunable.layer_weights(layer)}
        for i, variable in enumerate(_own_weights(layer)):
            if id(variable) not in kernels:
                shared[(layer.name, i)] = variable.numpy()
    return FrozenState(frozen, owner, heads, shared)


def initial_values(model, state: FrozenState, theta: Sequence[np.ndarray]) -> Tuple[List[str], List[np.ndarray]]:
    """(names, values) of the run's initial weights file, in the wrapped model's variable order: the
    task's own starting values `theta` (a plain model's weights, by position) for its kernels and
    head, `state` for the shared layers' other variables and the frozen variables."""
    found = parts(model)
    if found is None or found.task != state.tasks:
        raise ValueError("initial_values needs the Frankenmodel of the task after the state's")
    extra = {id(v) for v in found.variables()}
    own = [v for v in constraint.model_weights(model) if id(v) not in extra]
    if len(own) != len(theta) or any(tuple(v.shape) != np.shape(t) for v, t in zip(own, theta)):
        raise UsageError("branch franken: the new task's starting weights do not fit its Frankenmodel")
    where = {}
    for layer in _shared_layers(model, found.output):
        kernels = {id(w.variable) for w in prunable.layer_weights(layer)}
        where.update({id(v): (layer.name, i) for i, v in enumerate(_own_weights(layer)) if id(v) not in kernels})
    values = {id(v): (state.shared[where[id(v)]] if id(v) in where else np.asarray(t)) for v, t in zip(own, theta)}
    for path, variable in found.frozen.items():
        values[id(variable)] = state.frozen[path]
        values[id(found.owner[path])] = state.owner[path]
    for variables, arrays in zip(found.heads, state.heads):
        values.update({id(v): a for v, a in zip(variables, arrays)})
    variables = constraint.model_weights(model)
    for v in variables:
        if tuple(v.shape) != np.shape(values[id(v)]):
            raise UsageError(f"branch franken: {v.name} of the earlier tasks does not fit the new task's model "
                             f"({np.shape(values[id(v)])} for {tuple(v.shape)})")
    return [v.name for v in variables], [np.asarray(values[id(v)], np.float32) for v in variables]


def free_masks(model, state: FrozenState) -> Dict[str, np.ndarray]:
    """The new task's share: the shared positions no earlier task owns, and all of its own head."""
    output = parts(model).output
    masks = {}
    for weight in prunable.prunable_weights(model):
        if weight.layer.name == output:
            masks[weight.path] = np.ones(weight.variable.shape, np.float32)
        else:
            masks[weight.path] = (state.owner[weight.path] < 0).astype(np.float32)
    return masks


def share_rates(model, rate: float) -> Dict[str, float]:
    """Per prunable weight, the rate --prune_b prunes the task's share at: the output layer at half
    of it (the paper's convention, and the parent's default), every other weight at `rate`."""
    output = parts(model).output if parts(model) else output_layer(model)
    return {w.path: rate / 2 if w.layer.name == output else rate for w in prunable.prunable_weights(model)}


def share_masks(values: Mapping[str, np.ndarray], current: Mapping[str, np.ndarray], initial: Mapping[str, int],
                rates: Mapping[str, float], round_: int) -> Dict[str, np.ndarray]:
    """The task's share after `round_` rounds of magnitude pruning: per weight, the largest |value| of
    the current share, keep_count(initial share size, rate, round) of them (ties by position)."""
    result = {}
    for path, mask in current.items():
        keep = strategies.keep_count(int(initial[path]), rates[path], round_)
        flat, pruned = np.abs(np.asarray(values[path], np.float64)).ravel(), np.asarray(mask).ravel() <= 0
        if keep > int(np.count_nonzero(~pruned)):
            raise ValueError(f"round {round_} keeps {keep} weights of {path}; only {np.count_nonzero(~pruned)} remain")
        chosen = np.zeros(flat.size, np.float32)
        chosen[np.lexsort((-flat, pruned))[:keep]] = 1.0
        result[path] = chosen.reshape(np.shape(mask))
    return result


def view_arrays(model, view: int) -> Tuple[Dict[str, np.ndarray], Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Task `view`'s kernels of the shared layers ({path: array}, the values its network computes
    with) and its head (kernel, mask, bias), as numpy: what an export folds into a plain network."""
    found = parts(model)
    kernels = {}
    for weight in prunable.prunable_weights(model):
        if weight.path not in found.frozen:
            continue
        frozen = found.frozen[weight.path].numpy()
        if view == found.task:
            kernels[weight.path] = frozen + weight.variable.numpy()
        else:
            kernels[weight.path] = np.where(found.owner[weight.path].numpy() > view, np.float32(0), frozen)
    if view == found.task:
        out = next(l for l in constraint.walk_layers(model) if l.name == found.output)
        [weight] = [w for w in prunable.layer_weights(out) if w.attribute == "kernel"]
        head = (out.kernel.numpy(), weight.mask.numpy(), out.bias.numpy())
    else:
        head = tuple(v.numpy() for v in found.heads[view])
    return kernels, head


def ownership(model) -> List[Dict[str, int]]:
    """Per task 0..t of a Frankenmodel: the prunable weights it owns ('owned', its head's included),
    those its network computes with ('used': its own and the earlier tasks' in the shared layers,
    and its head) and its network's prunable weights ('total': the shared layers' and its head's)."""
    found = parts(model)
    shared_total = sum(int(v.shape.num_elements()) for v in found.frozen.values())
    own = {w.path: w.mask.numpy() for w in prunable.prunable_weights(model)}
    rows = []
    for task in range(found.task + 1):
        if task == found.task:
            owned = sum(int(np.count_nonzero(own[p])) for p in found.frozen)
            head_mask = next(m for p, m in own.items() if p not in found.frozen)
        else:
            owned = sum(int(np.count_nonzero(v.numpy() == task)) for v in found.owner.values())
            head_mask = found.heads[task][1].numpy()
        earlier = sum(int(np.count_nonzero((v.numpy() >= 0) & (v.numpy() < task))) for v in found.owner.values())
        head = int(np.count_nonzero(head_mask))
        rows.append({"owned": owned + head, "used": earlier + owned + head, "total": shared_total + head_mask.size})
    return rows


def logits(network, images: np.ndarray, info, batch_size: int) -> np.ndarray:
    """A network's logits on uint8 `images`, preprocessed as the task's pipeline does, in batches of
    `batch_size` (one order and batching for every network compared bit for bit)."""
    preprocess = pipeline.preprocess_fn(info)
    return np.concatenate([tf.cast(network(preprocess(images[i:i + batch_size]), training=False), tf.float32).numpy()
                           for i in range(0, len(images), batch_size)])


def fold_view(model, view: int, plain) -> keras.Model:
    """`plain` (a freshly built masked model of task `view`'s architecture) set to that task's view of
    the Frankenmodel, then stripped of masks and constraints: a plain tf_keras network."""
    found = parts(model)
    kernels, (head_kernel, head_mask, head_bias) = view_arrays(model, view)
    source = {layer.name: layer for layer in constraint.walk_layers(model)}
    for layer in constraint.walk_layers(plain):
        mine = {id(w.variable): w for w in prunable.layer_weights(layer)}
        theirs = _own_weights(source[layer.name])
        for i, variable in enumerate(_own_weights(layer)):
            if layer.name == found.output:
                variable.assign(head_kernel * head_mask if id(variable) in mine else head_bias)
            elif id(variable) in mine:
                variable.assign(kernels[mine[id(variable)].path])
            else:
                variable.assign(theirs[i].numpy())
        for weight in mine.values():
            weight.mask.assign(np.ones(weight.variable.shape, np.float32))
    return dense_export.plain_model(plain)


def _serving(network, info, name: str) -> keras.Model:
    mean, std = np.asarray(info.mean, np.float64), np.asarray(info.std, np.float64)
    images = keras.Input(shape=tuple(info.input_shape), dtype="uint8", name=dense_export.INPUT_NAME)
    scaled = keras.layers.Rescaling(scale=(1.0 / (255.0 * std)).tolist(), offset=(-mean / std).tolist(),
                                    name=f"preprocess_{name}")(images)
    return keras.Model(images, network(scaled), name=f"{name}_serving")


def export_saved_model(model, plains: Sequence, infos: Sequence, path: str, metadata: Dict,
                       check_images: np.ndarray, tolerance: float = 1e-5) -> Dict[str, float]:
    """Writes one SavedModel serving every task of the Frankenmodel: signature task_<s> takes uint8
    images and returns task s's logits (and probabilities), with its dataset's preprocessing inside.
    Loads it back and checks every signature against the Frankenmodel's view of that task on
    `check_images`; returns {signature: max |difference|}."""
    module = tf.Module()
    module.networks = [_serving(fold_view(model, s, plain), info, f"task_{s}")
                       for s, (plain, info) in enumerate(zip(plains, infos))]
    spec = tf.TensorSpec([None, *infos[0].input_shape], tf.uint8, name=dense_export.INPUT_NAME)
    signatures = {f"task_{s}": dense_export.make_serve_function(lambda x, n=network: n(x, training=False), spec)
                  .get_concrete_function() for s, network in enumerate(module.networks)}
    staging = dense_export.saving_to(path)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            module.tf_lottery_metadata = tf.saved_model.Asset(dense_export.write_metadata(scratch, metadata))
            target = os.path.join(staging, "model")
            tf.saved_model.save(module, target, signatures=signatures)
        dense_export.replace_directory(target, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    loaded = tf.saved_model.load(path)
    differences = {}
    for s, info in enumerate(infos):
        expected = logits(view_model(model, s), check_images, info, len(check_images))
        served = loaded.signatures[f"task_{s}"](**{dense_export.INPUT_NAME: tf.constant(check_images)})["logits"]
        differences[f"task_{s}"] = float(np.max(np.abs(served.numpy() - expected)))
        # relative to the logits' size: the export sums each kernel's tasks once (float32 rounding)
        allowed = tolerance * max(1.0, float(np.max(np.abs(expected))))
        if not differences[f"task_{s}"] <= allowed:
            raise ExportCheckError(f"signature task_{s} of {path} differs from the Frankenmodel by "
                                   f"{differences[f'task_{s}']:.3g} > {allowed:.3g} ({tolerance} of its largest logit)")
    return differences
