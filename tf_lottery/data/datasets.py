"""Loading a tensorflow-datasets image classification set into memory, split three ways.

The validation split is carved out of TFDS's train split with a fixed permutation
(the same for every seed and replicate), so it never overlaps the training data
and the test set is never used for selection.
"""

import dataclasses
import functools
from typing import Optional, Tuple

import numpy as np

from tf_lottery.data import sources
from tf_lottery.data.sources import DataError

VALIDATION_SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: Tuple[int, ...]
    num_classes: int
    mean: Tuple[float, ...] = ()  # per-channel, in [0, 1] pixel units, over the training split
    std: Tuple[float, ...] = ()
    train_size: int = 0
    validation_size: int = 0
    test_size: int = 0


@dataclasses.dataclass(frozen=True)
class Splits:
    info: DatasetInfo
    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    train_indices: np.ndarray  # positions in TFDS's train split, for overlap checks
    validation_indices: np.ndarray


_data_dir = sources.data_dir  # --data_dir, else $TFDS_DATA_DIR, else TFDS's default


def _builder(name: str, data_dir: Optional[str]):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    try:
        return tfds.builder(name, data_dir=_data_dir(data_dir))
    except Exception as error:  # DatasetNotFoundError and friends
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"--dataset: unknown tensorflow-datasets dataset {name!r} ({first})") from None


def _features(builder) -> Tuple[Tuple[int, ...], int]:
    features = builder.info.features
    try:
        image_key = "image" if "image" in features else next(k for k in features if k.startswith("image"))
        shape = tuple(int(d) for d in features[image_key].shape)
        num_classes = int(features["label"].num_classes)
    except (KeyError, StopIteration, AttributeError, TypeError):
        raise DataError(f"--dataset: {builder.name} has no image/label features") from None
    if any(d is None or d <= 0 for d in shape):
        raise DataError(f"--dataset: {builder.name} images have no fixed shape ({shape})")
    return shape, num_classes


def describe(name: str, data_dir: Optional[str] = None) -> DatasetInfo:
    """Input shape and class count from the dataset's metadata, without reading data."""
    shape, num_classes = _features(_builder(name, data_dir))
    return DatasetInfo(name=name, input_shape=shape, num_classes=num_classes)


def _prepare(builder, download: bool, data_dir: Optional[str]):
    """Prepared already, or checked (seconds, see sources.py) and then downloaded and prepared by TFDS."""
    sources.prepare(builder, download, data_dir)


def _read_splits(builder):
    """(images, labels) numpy arrays of the train and test splits.

    batch_size=-1 sizes its single batch from the split sizes in the dataset's
    metadata. A builder without them (tfds.testing.mock_data's) would ask for a
    batch of sys.maxsize and abort, so there each split's cardinality sizes it.
    """
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    if builder.info.splits.total_num_examples:
        return tfds.as_numpy(builder.as_dataset(split=["train", "test"], batch_size=-1, as_supervised=True))
    arrays = []
    for split, dataset in zip(("train", "test"), builder.as_dataset(split=["train", "test"], as_supervised=True)):
        count = int(dataset.cardinality())
        if count <= 0:
            raise DataError(f"--dataset: {builder.name} does not say how many examples its {split} split holds")
        arrays.append(tfds.as_numpy(dataset.batch(count).get_single_element()))
    return arrays


@functools.lru_cache(maxsize=4)
def load(name: str, data_dir: Optional[str] = None, validation_size: int = 5000, download: bool = True) -> Splits:
    """Decodes the dataset once per process into uint8 arrays split train/validation/test."""
    builder = _builder(name, data_dir)
    shape, num_classes = _features(builder)
    _prepare(builder, download, data_dir)
    (train_x, train_y), (test_x, test_y) = _read_splits(builder)
    if validation_size >= len(train_x):
        raise DataError(f"--validation_size: {validation_size} leaves no training data ({len(train_x)} examples)")
    order = np.random.default_rng(VALIDATION_SPLIT_SEED).permutation(len(train_x))
    val_idx, train_idx = np.sort(order[:validation_size]), np.sort(order[validation_size:])
    pixels = train_x[train_idx].reshape(-1, shape[-1]).astype(np.float64) / 255.0
    info = DatasetInfo(
        name=name, input_shape=shape, num_classes=num_classes,
        mean=tuple(float(v) for v in pixels.mean(axis=0)),
        std=tuple(float(v) for v in np.maximum(pixels.std(axis=0), 1e-3)),
        train_size=len(train_idx), validation_size=len(val_idx), test_size=len(test_x),
    )
    return Splits(
        info=info,
        train_images=train_x[train_idx], train_labels=train_y[train_idx].astype(np.int64),
        validation_images=train_x[val_idx], validation_labels=train_y[val_idx].astype(np.int64),
        test_images=test_x, test_labels=test_y.astype(np.int64),
        train_indices=train_idx, validation_indices=val_idx,
    )
