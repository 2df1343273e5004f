"""Which weights are prunable, of which kind, and under which path.

Prunable is a property of a weight, not of a layer: an LSTM prunes its input and
recurrent kernels, a MultiHeadAttention its four projections. Each layer type
declares the weights it can prune (`declare`); a declared weight is prunable in
a given model when the constraint attribute beside it holds a MaskConstraint.
Masks, rates and files are keyed by the weight's path,
"<model layer name>/<attribute>" ('fc1/kernel', 'lstm/recurrent_kernel',
'attn/query/kernel'), which is unique within a model and stable across builds.

Each model names its output layer(s) (`declare_outputs`, done by models.build
from the registry), rather than the kind being guessed from layer order: the
paper prunes output weights at their own, lower rate.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from tf_lottery.pruning.constraint import MaskConstraint, mask_constraints, walk_layers

KINDS = ("conv", "dense", "output", "embedding", "recurrent", "attention")
_OUTPUTS = "_tf_lottery_output_layers"


@dataclasses.dataclass(frozen=True, eq=False)
class Slot:
    """A weight a layer type can prune: `owner.<attribute>`, guarded by `owner.<constraint_attribute>`."""

    name: str  # the path below the model layer: 'kernel', 'query/kernel'
    owner: keras.layers.Layer  # the layer, cell or sublayer that holds the variable
    attribute: str
    constraint_attribute: str
    kind: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"prunable weight kind {self.kind!r} is none of {', '.join(KINDS)}")


@dataclasses.dataclass(frozen=True, eq=False)
class PrunableWeight:
    """A prunable weight of a built model, its MaskConstraint and (once attached) its mask."""

    path: str  # '<model layer name>/<slot name>'
    layer: keras.layers.Layer  # the model's (leaf) layer
    owner: keras.layers.Layer  # the layer or cell holding the variable, and its mask
    attribute: str
    kind: str
    variable: tf.Variable
    constraint: MaskConstraint

    @property
    def mask(self) -> Optional[tf.Variable]:
        return self.constraint.mask_for(self.variable)


_DECLARATIONS: Dict[type, Callable[[keras.layers.Layer], List[Slot]]] = {}


def declare(*layer_types):
    """Decorator: `slots(layer) -> [Slot]` declares the prunable weights of `layer_types`.

    The most specific declared type in a layer's class hierarchy decides, so a
    subclass can declare other weights than its base.
    """

    def add(slots):
        for layer_type in layer_types:
            _DECLARATIONS[layer_type] = slots
        return slots

    return add


def _own(layer, attribute, constraint, kind, owner=None, prefix=""):
    return Slot(f"{prefix}{attribute}", owner or layer, attribute, constraint, kind)


@declare(keras.layers.Dense, keras.layers.EinsumDense)
def _dense(layer):
    return [_own(layer, "kernel", "kernel_constraint", "dense")]


@declare(keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
def _conv(layer):
    return [_own(layer, "kernel", "kernel_constraint", "conv")]


@declare(keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
def _depthwise(layer):
    return [_own(layer, "depthwise_kernel", "depthwise_constraint", "conv")]


@declare(keras.layers.Embedding)
def _embedding(layer):
    return [_own(layer, "embeddings", "embeddings_constraint", "embedding")]


@declare(keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)
def _recurrent(layer):
    # The variables and their constraints live on the cell; paths name the layer.
    return [_own(layer, a, c, "recurrent", owner=layer.cell)
            for a, c in (("kernel", "kernel_constraint"), ("recurrent_kernel", "recurrent_constraint"))]


@declare(keras.layers.MultiHeadAttention)
def _attention(layer):
    # tf_keras keeps the projections private; they exist once the layer is built.
    projections = [getattr(layer, f"_{p}_dense", None) for p in ("query", "key", "value", "output")]
    return [_own(p, "kernel", "kernel_constraint", "attention", prefix=f"{p.name}/")
            for p in projections if p is not None]


def declared_slots(layer) -> List[Slot]:
    """The weights `layer`'s type can prune (whether or not they carry a MaskConstraint)."""
    for layer_type in type(layer).__mro__:
        if layer_type in _DECLARATIONS:
            return _DECLARATIONS[layer_type](layer)
    return []


def layer_weights(layer) -> List[PrunableWeight]:
    """The prunable weights of one model layer, in declaration order."""
    result = []
    for slot in declared_slots(layer):
        guard = getattr(slot.owner, slot.constraint_attribute, None)
        variable = getattr(slot.owner, slot.attribute, None)
        if isinstance(guard, MaskConstraint) and variable is not None:
            result.append(PrunableWeight(f"{layer.name}/{slot.name}", layer, slot.owner, slot.attribute,
                                         slot.kind, variable, guard))
    return result


def prunable_weights(model) -> List[PrunableWeight]:
    """Every prunable weight of a built model, in model order.

    Raises:
      ValueError: two weights share a path, or a MaskConstraint sits where no
        declaration looks (it would never be masked): both are programming errors.
    """
    result, guards = [], set()
    for layer in walk_layers(model):
        found = layer_weights(layer)
        guards.update(id(w.constraint) for w in found)
        stray = [c for c in mask_constraints(layer) if id(c) not in guards]
        if stray:
            raise ValueError(f"layer {layer.name} ({type(layer).__name__}) holds a MaskConstraint on a weight "
                             "that no prunable-weight declaration covers")
        result.extend(found)
    paths = [w.path for w in result]
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise ValueError(f"prunable weight paths must be unique, repeated: {', '.join(duplicates)}")
    return result


def attach_masks(model):
    """Gives every prunable weight of a built model its mask variable; call under the strategy scope."""
    for weight in prunable_weights(model):
        weight.constraint.attach(weight.owner, weight.attribute)
    return model


def declare_outputs(model, layer_names: Sequence[str]):
    """Records which of the model's layers are its output layers (kind 'output')."""
    names = tuple(layer_names)
    known = {layer.name for layer in walk_layers(model)}
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"model {model.name} has no output layer named {', '.join(missing)}")
    # object.__setattr__: a tuple set through Keras would be tracked, and would add a
    # node to every checkpoint's object graph.
    object.__setattr__(model, _OUTPUTS, names)
    return model


def output_layers(model) -> Tuple[str, ...]:
    """The layer names `declare_outputs` recorded; none for a model built without it."""
    return getattr(model, _OUTPUTS, ())



def slots_by_path(model) -> Dict[str, Slot]:
    """Every weight the model's layer types could prune, by path, masked or not: how a
    plain copy of a masked model (an export) finds the weights its masks were for."""
    return {f"{layer.name}/{slot.name}": slot for layer in walk_layers(model) for slot in declared_slots(layer)}
