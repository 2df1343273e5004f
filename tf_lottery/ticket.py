"""The untrained ticket in one file, and the masked model rebuilt from it.

A ticket file (.npz) holds the survivors at the weights the run was reset to
(θ0, or θk with --rewind_iteration; pruned weights are stored as exact zeros),
the masks, and a JSON header: model name and options, input shape, class count,
dataset statistics, level, variant, density and the flags of the experiment.

    model = tf_lottery.load_ticket("ticket.npz")                # ready to compile and fit
    model = tf_lottery.load_ticket("ticket.npz", num_classes=100)  # with a new output layer
"""

import dataclasses
import json
from typing import Any, Dict, List, Optional

import numpy as np

from tf_lottery.errors import UsageError
from tf_lottery.experiment.files import weight_path
from tf_lottery.utils import atomic_path

FORMAT_VERSION = 1
_HEADER, _WEIGHT, _NAME, _MASK = "header", "weight/", "weight_name/", "mask/"


class TicketError(UsageError):
    """A ticket file that cannot be read or used; the message is one line."""


@dataclasses.dataclass
class Ticket:
    """The contents of a ticket file."""

    header: Dict[str, Any]
    weights: List[np.ndarray]  # every model variable except masks, in model order
    weight_names: List[str]
    masks: Dict[str, np.ndarray]  # {prunable weight path ('fc1/kernel'): 0/1 float32 array}

    @property
    def density(self) -> float:
        total = sum(m.size for m in self.masks.values())
        return sum(int(np.count_nonzero(m)) for m in self.masks.values()) / total if total else 1.0


def save_ticket(path: str, header: Dict[str, Any], weights: List[np.ndarray], weight_names: List[str],
                masks: Dict[str, np.ndarray]):
    """Writes a ticket file; `header` must name model, model_options, input_shape and num_classes."""
    missing = [k for k in ("model", "model_options", "input_shape", "num_classes") if k not in header]
    if missing:
        raise TicketError(f"ticket header lacks {', '.join(missing)}")
    arrays = {_HEADER: np.array(json.dumps({**header, "format_version": FORMAT_VERSION}, sort_keys=True, default=float))}
    for i, (name, value) in enumerate(zip(weight_names, weights)):
        arrays[f"{_WEIGHT}{i:04d}"] = np.asarray(value)
        arrays[f"{_NAME}{i:04d}"] = np.array(name)
    for name, mask in masks.items():
        arrays[f"{_MASK}{name}"] = np.asarray(mask, np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def read_ticket(path: str) -> Ticket:
    """Reads a ticket file without building anything."""
    try:
        with np.load(path) as data:
            header = json.loads(str(data[_HEADER]))
            count = len([k for k in data.files if k.startswith(_WEIGHT)])
            weights = [data[f"{_WEIGHT}{i:04d}"] for i in range(count)]
            names = [str(data[f"{_NAME}{i:04d}"]) for i in range(count)]
            # weight_path: tickets written before masks were keyed by weight name the layer alone.
            masks = {weight_path(k[len(_MASK):]): data[k].astype(np.float32) for k in data.files if k.startswith(_MASK)}
    except FileNotFoundError:
        raise TicketError(f"no ticket file {path}") from None
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise TicketError(f"{path} is not a tf_lottery ticket ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise TicketError(f"{path} has ticket format {header['format_version']}; this tf_lottery reads up to {FORMAT_VERSION}")
    return Ticket(header, weights, names, masks)


def load_ticket(path: str, num_classes: Optional[int] = None, seed: Optional[int] = None):
    """Rebuilds the masked tf_keras model of a ticket, untrained and ready to train.

    The model is the registered model the ticket names, its prunable weights
    carrying MaskConstraints with the ticket's masks, so training keeps pruned
    weights at 0.

    Args:
      path: a ticket file written by `tf_lottery.export` (--format=ticket).
      num_classes: a class count other than the ticket's gives a new output layer,
        freshly initialised and unpruned (mask of ones); every other layer keeps
        the ticket's weights and mask.
      seed: seeds the random initialisation of a new output layer.

    Returns:
      An uncompiled tf_keras.Model.

    Raises:
      TicketError: unreadable ticket, unknown model, or weights that do not fit.
    """
    # Imported here so that reading a ticket's header needs no TensorFlow.
    from tf_lottery import models  # pylint: disable=import-outside-toplevel
    from tf_lottery.pruning import constraint, masks as masks_lib  # pylint: disable=import-outside-toplevel

    ticket = read_ticket(path)
    header = ticket.header
    original_classes = int(header["num_classes"])
    classes = original_classes if num_classes is None else int(num_classes)
    if classes <= 0:
        raise TicketError(f"num_classes must be > 0, got {num_classes}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in header["model_options"].items()}
    try:
        model = models.build(header["model"], header["input_shape"], classes, seed=seed, **options)
    except UsageError as error:  # an unknown model name
        raise TicketError(f"{path}: {str(error).splitlines()[0]}") from None
    variables = constraint.model_weights(model)
    if len(variables) != len(ticket.weights):
        raise TicketError(f"{path}: {len(ticket.weights)} weights do not fit model {header['model']} ({len(variables)} variables)")
    for variable, value, name in zip(variables, ticket.weights, ticket.weight_names):
        if tuple(variable.shape) == value.shape:
            variable.assign(value)
        elif classes == original_classes:
            raise TicketError(f"{path}: weight {name} has shape {value.shape}, model variable {tuple(variable.shape)}")
        # Otherwise a variable of the new output layer: it keeps its fresh initialisation.
    model_masks = masks_lib.ones_like_model(model)
    for name, mask in ticket.masks.items():
        if name not in model_masks:
            raise TicketError(f"{path}: mask for {name}, which model {header['model']} does not have")
        if mask.shape == model_masks[name].shape:
            model_masks[name] = mask
        elif classes == original_classes:
            raise TicketError(f"{path}: mask for {name} has shape {mask.shape}, the weight {model_masks[name].shape}")
    masks_lib.apply_masks(model, model_masks)
    return model
