"""Loading a tensorflow-datasets image classification set into memory, split three ways.

The validation split is carved out of TFDS's train split with a fixed permutation
(the same for every seed and replicate), so it never overlaps the training data
and the test set is never used for selection.

A class subset (`--classes=5-9`) keeps the examples of those labels in every split,
relabelled 0..n-1 in increasing order of the original label (DatasetInfo.classes
keeps the original labels, so dataset.json records the mapping). It is taken after
the validation split is carved from the whole train split, so the subsets of one
dataset (split MNIST's 0-4 and 5-9) share one carving and never see each other's
validation examples; --validation_size counts the whole dataset's held-out examples.

A text dataset (one Text feature) becomes character windows for language modelling
(data/text.py: TFDS's own validation split, a vocabulary from the training text),
and `gym:<id>` a gymnasium environment (tasks/reinforcement.py); DatasetInfo.task
says which (tf_lottery.tasks).
"""

import dataclasses
import functools
from typing import Optional, Tuple

import numpy as np

from tf_lottery.data import sources, text
from tf_lottery.data.sources import DataError
from tf_lottery.tasks import reinforcement
from tf_lottery.utils import spans

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
    classes: Tuple[int, ...] = ()  # with --classes: the original label of each class 0..n-1
    task: str = "classification"  # tf_lottery.tasks: classification, language_model, reinforcement
    vocabulary: str = ""  # language_model: the character of each id


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


def _chosen(name: str, num_classes: int, classes: Tuple[int, ...]) -> Tuple[int, ...]:
    """`classes`, checked to be labels of the dataset."""
    outside = [c for c in classes if c >= num_classes]
    if outside:
        raise DataError(f"--classes: {name} has {num_classes} classes (labels 0-{num_classes - 1}); "
                        f"{outside[0]} is not one of them")
    return tuple(classes)


DEFAULT_SEQUENCE_LENGTH = 100  # DataConfig.sequence_length's default


def describe(name: str, data_dir: Optional[str] = None, classes: Tuple[int, ...] = (),
             sequence_length: int = DEFAULT_SEQUENCE_LENGTH) -> DatasetInfo:
    """Input shape and class count (of the subset `classes`, when given) from the dataset's metadata,
    without reading data (a text set's vocabulary is read from its training text)."""
    if reinforcement.is_environment(name):
        _no_classes(name, classes)
        return reinforcement.describe(name)
    builder = _builder(name, data_dir)
    if text.text_feature(builder):
        _no_classes(name, classes)
        return _load_text(name, data_dir, True, int(sequence_length)).info
    shape, num_classes = _features(builder)
    chosen = _chosen(name, num_classes, tuple(classes))
    return DatasetInfo(name=name, input_shape=shape, num_classes=len(chosen) or num_classes, classes=chosen)


def _subset(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, classes: Tuple[int, ...]):
    """The examples whose label is in `classes`, relabelled to its position there."""
    if not classes:
        return images, labels, indices
    relabel = np.full(max(int(labels.max()) + 1, max(classes) + 1), -1, np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    keep = relabel[labels] >= 0
    return images[keep], relabel[labels[keep]], indices[keep]


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


def _no_classes(name: str, classes):
    if classes:
        raise DataError(f"--classes: {name} is not a classification dataset")


def load(name: str, data_dir: Optional[str] = None, validation_size: int = 5000, download: bool = True,
         classes: Tuple[int, ...] = (), sequence_length: int = DEFAULT_SEQUENCE_LENGTH) -> Splits:
    """Decodes the dataset once per process into uint8 arrays split train/validation/test (of the
    labels in `classes` only, relabelled 0..n-1, when given); a text set into character windows."""
    if reinforcement.is_environment(name):
        _no_classes(name, classes)
        return reinforcement.load(name)
    if text.text_feature(_builder(name, data_dir)):
        _no_classes(name, classes)
        return _load_text(name, data_dir, download, int(sequence_length))
    return _load(name, data_dir, validation_size, download, tuple(classes))


def for_config(d, read: bool = True):
    """The Splits (read=True) or DatasetInfo (read=False: metadata only) of a DataConfig."""
    if read:
        return load(d.dataset, d.data_dir, d.validation_size, d.download, d.class_list(), d.sequence_length)
    return describe(d.dataset, d.data_dir, d.class_list(), d.sequence_length)


@functools.lru_cache(maxsize=2)
def _texts(name: str, data_dir: Optional[str], download: bool):
    builder = _builder(name, data_dir)
    _prepare(builder, download, data_dir)
    return text.read_texts(builder, text.text_feature(builder))


@functools.lru_cache(maxsize=4)
def _load_text(name: str, data_dir: Optional[str], download: bool, sequence_length: int) -> Splits:
    train_text, validation_text, test_text = _texts(name, data_dir, download)
    vocab = text.vocabulary(train_text, (validation_text, test_text))
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (
        text.windows(text.encode(t, vocab), sequence_length) for t in (train_text, validation_text, test_text))
    if not len(train_x):
        raise DataError(f"--sequence_length: {sequence_length} leaves no training window in {name} "
                        f"({len(train_text)} characters)")
    info = DatasetInfo(name=name, input_shape=(sequence_length,), num_classes=len(vocab),
                       train_size=len(train_x), validation_size=len(val_x), test_size=len(test_x),
                       task="language_model", vocabulary=vocab)
    return Splits(info=info, train_images=train_x, train_labels=train_y, validation_images=val_x,
                  validation_labels=val_y, test_images=test_x, test_labels=test_y,
                  train_indices=np.arange(len(train_x)), validation_indices=np.arange(len(val_x)))


@functools.lru_cache(maxsize=2)
def _decoded(name: str, data_dir: Optional[str], download: bool):
    """((train images, labels), (test images, labels)), shape and class count, decoded once per process
    for every split and class subset taken from them."""
    builder = _builder(name, data_dir)
    shape, num_classes = _features(builder)
    _prepare(builder, download, data_dir)
    return _read_splits(builder), shape, num_classes


@functools.lru_cache(maxsize=4)
def _load(name: str, data_dir: Optional[str], validation_size: int, download: bool, classes: Tuple[int, ...]) -> Splits:
    classes = _chosen(name, _features(_builder(name, data_dir))[1], classes)  # before anything is prepared
    ((train_x, train_y), (test_x, test_y)), shape, num_classes = _decoded(name, data_dir, download)
    if validation_size >= len(train_x):
        raise DataError(f"--validation_size: {validation_size} leaves no training data ({len(train_x)} examples)")
    order = np.random.default_rng(VALIDATION_SPLIT_SEED).permutation(len(train_x))
    val_idx, train_idx = np.sort(order[:validation_size]), np.sort(order[validation_size:])
    train_y, test_y = train_y.astype(np.int64), test_y.astype(np.int64)
    train = _subset(train_x[train_idx], train_y[train_idx], train_idx, classes)
    validation = _subset(train_x[val_idx], train_y[val_idx], val_idx, classes)
    test = _subset(test_x, test_y, np.arange(len(test_x)), classes)
    if classes and not len(train[0]):
        raise DataError(f"--classes: {name}'s train split holds no example of classes {spans(classes)}")
    pixels = train[0].reshape(-1, shape[-1]).astype(np.float64) / 255.0
    info = DatasetInfo(
        name=name, input_shape=shape, num_classes=len(classes) or num_classes,
        mean=tuple(float(v) for v in pixels.mean(axis=0)),
        std=tuple(float(v) for v in np.maximum(pixels.std(axis=0), 1e-3)),
        train_size=len(train[0]), validation_size=len(validation[0]), test_size=len(test[0]), classes=classes,
    )
    return Splits(
        info=info,
        train_images=train[0], train_labels=train[1],
        validation_images=validation[0], validation_labels=validation[1],
        test_images=test[0], test_labels=test[1],
        train_indices=train[2], validation_indices=validation[2],
    )


def _clear():
    _load.cache_clear()
    _decoded.cache_clear()
    _load_text.cache_clear()
    _texts.cache_clear()


load.cache_clear = _clear  # tests that mock a dataset clear what was decoded
