"""A tensorflow-datasets text set as character windows, for language modelling.

A text dataset has one Text feature; TFDS's train, validation and test splits are
used as they are (tiny_shakespeare holds one text per split), so --validation_size
does not apply. The vocabulary is every character of the training text, in code
point order (a character the training text lacks maps to one extra id, U+FFFD).
Each split is cut into consecutive windows of `sequence_length` + 1 characters
that overlap by one: a window's first n characters are the model's input and its
last n the targets, so every character after a split's first is predicted exactly
once per pass (the tail too short for a window is dropped). The training stream
shuffles the windows as the image stream shuffles images (pipeline.training_dataset).
"""

from typing import Optional, Tuple

import numpy as np

from tf_lottery.data.sources import DataError

UNKNOWN = "\ufffd"
SPLITS = ("train", "validation", "test")


def text_feature(builder) -> Optional[str]:
    """The name of a dataset's only Text feature, or None for other datasets."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    features = builder.info.features
    try:
        texts = [k for k in features if isinstance(features[k], tfds.features.Text)]
    except TypeError:
        return None
    return texts[0] if len(texts) == 1 and len(features) == 1 else None


def read_texts(builder, feature: str) -> Tuple[str, ...]:
    """(train, validation, test) texts, each split's examples joined by newlines."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    missing = [s for s in SPLITS if s not in builder.info.splits]
    if missing:
        raise DataError(f"--dataset: {builder.name} has no {missing[0]} split (a language model uses "
                        f"TFDS's {', '.join(SPLITS)} splits)")
    texts = []
    for split in SPLITS:
        examples = [bytes(x[feature]).decode("utf-8") for x in tfds.as_numpy(builder.as_dataset(split=split))]
        texts.append("\n".join(examples))
    return tuple(texts)


def vocabulary(train_text: str, others: Tuple[str, ...] = ()) -> str:
    """The training text's characters in code point order, plus U+FFFD when another split has one it lacks."""
    chars = sorted(set(train_text))
    if any(set(t) - set(chars) for t in others) and UNKNOWN not in chars:
        chars.append(UNKNOWN)
    return "".join(chars)


def encode(text: str, vocab: str) -> np.ndarray:
    """Character ids (int32); characters outside `vocab` get U+FFFD's id."""
    index = {c: i for i, c in enumerate(vocab)}
    unknown = index.get(UNKNOWN, -1)
    return np.fromiter((index.get(c, unknown) for c in text), np.int32, count=len(text))


def decode(ids, vocab: str) -> str:
    return "".join(vocab[int(i)] for i in ids)


def windows(ids: np.ndarray, sequence_length: int) -> Tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), each [windows, sequence_length]: window w reads ids[w*n : w*n+n] and
    predicts ids[w*n+1 : w*n+n+1]."""
    n = int(sequence_length)
    count = (len(ids) - 1) // n
    if count < 1:
        return np.zeros((0, n), np.int32), np.zeros((0, n), np.int64)
    body = ids[:count * n + 1]
    inputs = body[:-1].reshape(count, n)
    targets = body[1:].reshape(count, n).astype(np.int64)
    return inputs, targets
