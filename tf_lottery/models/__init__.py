"""Model registry: `names()` and `build(name, input_shape, num_classes)`.

Every model is an ordinary tf_keras model whose prunable kernels carry a
MaskConstraint with its mask variable attached. Model files register themselves
on import; the imports at the bottom make every model known.
"""

import dataclasses
from typing import Callable, Sequence

import tf_keras as keras

from tf_lottery import registry
from tf_lottery.pruning import constraint


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    factory: Callable[..., keras.Model]
    augment: bool = False  # whether training augmentation is on by default


_MODELS = registry.Registry[ModelSpec]("model")


def register(name: str, augment: bool = False):
    """Decorator: registers `factory(input_shape, num_classes, **options)` under `name`."""

    def add(factory):
        _MODELS.register(name, ModelSpec(factory, augment))
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
    factory = _MODELS.get(name).factory
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = factory(tuple(input_shape), int(num_classes), **options)
    return constraint.attach_masks(model)


# pylint: disable=wrong-import-position,unused-import
from tf_lottery.models import conv, mlp, resnet, vgg  # noqa: E402,F401
