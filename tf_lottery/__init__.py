"""tf_lottery: the Lottery Ticket Hypothesis laboratory for TensorFlow 2 / tf_keras.

Importing the package selects the Keras 2 API (tf_keras) before TensorFlow is
loaded: tensorflow-model-optimization and every model here need it.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter hides the lines users need to read.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def load_ticket(path, **kwargs):
    """Rebuilds an exported ticket as a masked Keras model (see tf_lottery.ticket)."""
    from tf_lottery import ticket  # pylint: disable=import-outside-toplevel

    return ticket.load_ticket(path, **kwargs)
