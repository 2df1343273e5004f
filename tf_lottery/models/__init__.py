"""Model registry: `names()` and `build(name, input_shape, num_classes)`.

Every model is an ordinary tf_keras model whose prunable weights carry a
MaskConstraint with its mask variable attached, and which knows its output
layers (pruned at the output rate). Model files register themselves on import;
the imports at the bottom make every model known.
"""

import dataclasses
from typing import Callable, Sequence, Tuple

import tf_keras as keras

from tf_lottery import registry
from tf_lottery.pruning import prunable


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    factory: Callable[..., keras.Model]
    augment: bool = False  # whether training augmentation is on by default
    outputs: Tuple[str, ...] = ("output",)  # the output layers' names: their weights have kind "output"
    resolution_agnostic: bool = False  # global pooling: the same weights fit any image height and width


_MODELS = registry.Registry[ModelSpec]("model")


def register(name: str, augment: bool = False, outputs: Sequence[str] = ("output",), resolution_agnostic: bool = False):
    """Decorator: registers `factory(input_shape, num_classes, **options)` under `name`.

    Args:
      name: the --model name.
      augment: whether training augmentation is on by default.
      outputs: names of the model's output layers, whose prunable weights are
        pruned at the output rate; every model here names its head "output".
      resolution_agnostic: whether its weights fit images of any height and width
        (global pooling before the head), so a ticket may move to other resolutions.
    """

    def add(factory):
        _MODELS.register(name, ModelSpec(factory, augment, tuple(outputs), resolution_agnostic))
        return factory

    return add


def names():
    return _MODELS.names()


def spec(name: str) -> ModelSpec:
    return _MODELS.get(name)


def build(name: str, input_shape: Sequence[int], num_classes: int, seed: int = None, **options) -> keras.Model:
    """Builds the masked model `name`; with `seed`, its initial weights are reproducible.

    Create it under `strategy.scope()` to distribute its variables and masks.
    """
    model_spec = _MODELS.get(name)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = model_spec.factory(tuple(input_shape), int(num_classes), **options)
    prunable.declare_outputs(model, model_spec.outputs)
    return prunable.attach_masks(model)


# pylint: disable=wrong-import-position,unused-import
from tf_lottery.models import conv, language, mlp, resnet, vgg  # noqa: E402,F401
