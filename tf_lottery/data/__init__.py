"""TFDS datasets held in memory as train/validation/test splits, and their pipelines."""

from tf_lottery.data.sources import availability  # noqa: F401
from tf_lottery.data.datasets import DataError, DatasetInfo, Splits, describe, for_config, load  # noqa: F401
