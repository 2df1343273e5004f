"""--strategy -> a tf.distribute strategy."""

import tensorflow as tf

from tf_lottery.config import ConfigError


def make_strategy(run_config) -> tf.distribute.Strategy:
    """auto: one_device on a single GPU, the default strategy on CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    name = run_config.strategy
    if name == "auto":
        name = "one_device" if gpus else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    raise ConfigError(f"--strategy: unknown strategy {name!r}")
