"""The numpy files of an experiment (masks, weights) and its JSON files, read and written safely.

Every write is atomic (a kill leaves the old file or the new one); every read of
a truncated or corrupted file raises CorruptFileError naming the file and what to
delete to recompute it, instead of a zipfile or JSON traceback.
"""

import collections
import json
import os
import zipfile
from typing import Dict, List, Mapping, Sequence

import numpy as np

from tf_lottery.errors import CorruptFileError
from tf_lottery.utils import atomic_path

Masks = Dict[str, np.ndarray]  # {weight path ('fc1/kernel'): 0/1 float32 array}
RECOMPUTE = "delete it to recompute it"
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError)


def _corrupt(path: str, error: Exception, recover: str) -> CorruptFileError:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    return CorruptFileError(f"{path} is truncated or corrupted ({reason}); {recover}")


def weight_path(key: str) -> str:
    """A mask key as a weight path: files written before masks were keyed by weight
    name hold the layer name alone ('fc1'), which always meant its kernel."""
    return key if "/" in key else f"{key}/kernel"


def write_masks(path: str, masks: Mapping[str, np.ndarray]):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{name: np.asarray(m, np.uint8) for name, m in masks.items()})


def read_masks(path: str, recover: str = RECOMPUTE) -> Masks:
    """{weight path: float32 0/1 array}, in the order written (old layer-name keys translated)."""
    try:
        with np.load(path) as data:
            return collections.OrderedDict((weight_path(name), data[name].astype(np.float32)) for name in data.files)
    except FileNotFoundError:
        raise
    except _UNREADABLE as error:
        raise _corrupt(path, error, recover) from error


def write_weights(path: str, names: Sequence[str], values: Sequence[np.ndarray]):
    """Every model variable except masks, by position, with the variables' names."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, names=np.array(list(names)), **{f"w{i:04d}": np.asarray(v) for i, v in enumerate(values)})


def read_weights(path: str, recover: str = RECOMPUTE) -> List[np.ndarray]:
    """The values of a weights file (θ0, θk, final or initial weights), in model order."""
    try:
        with np.load(path) as data:
            count = len([k for k in data.files if k.startswith("w")])
            return [data[f"w{i:04d}"] for i in range(count)]
    except FileNotFoundError:
        raise
    except _UNREADABLE as error:
        raise _corrupt(path, error, recover) from error


def read_weight_names(path: str, recover: str = RECOMPUTE) -> List[str]:
    try:
        with np.load(path) as data:
            return [str(n) for n in data["names"]]
    except FileNotFoundError:
        raise
    except _UNREADABLE as error:
        raise _corrupt(path, error, recover) from error


def read_json(path: str, recover: str = RECOMPUTE):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except _UNREADABLE as error:
        raise _corrupt(path, error, recover) from error


def exists(path: str) -> bool:
    return os.path.exists(path)
