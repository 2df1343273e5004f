"""Learning-rate schedules driven by the experiment's own iteration counter.

The schedule reads the training loop's `iteration` variable, not the optimizer's
step count: a level that rewinds to iteration k starts a fresh optimizer but
continues the schedule from k.
"""

import tensorflow as tf
import tf_keras as keras


class PiecewiseWithWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Piecewise-constant rates, multiplied by a linear warmup from 0 over the first iterations."""

    def __init__(self, iteration: tf.Variable, values, boundaries=(), warmup_iterations: int = 0):
        super().__init__()
        self.iteration = iteration
        self.values = [float(v) for v in values]
        self.boundaries = [int(b) for b in boundaries]
        self.warmup_iterations = int(warmup_iterations)

    def __call__(self, step=None):
        it = tf.cast(self.iteration, tf.float32)
        rate = tf.constant(self.values[0], tf.float32)
        for boundary, value in zip(self.boundaries, self.values[1:]):
            rate = tf.where(it >= boundary, tf.constant(value, tf.float32), rate)
        if self.warmup_iterations > 0:
            rate = rate * tf.minimum(1.0, (it + 1.0) / self.warmup_iterations)
        return rate

    def get_config(self):
        return {"values": self.values, "boundaries": self.boundaries, "warmup_iterations": self.warmup_iterations}


def from_config(training_config, iteration: tf.Variable) -> PiecewiseWithWarmup:
    values = training_config.lr_values or (training_config.learning_rate,)
    return PiecewiseWithWarmup(iteration, values, training_config.lr_boundaries, training_config.warmup_iterations)


def make_optimizer(training_config, schedule) -> keras.optimizers.Optimizer:
    """The configured optimizer following `schedule`; create it under the strategy scope."""
    if training_config.optimizer == "adam":
        # epsilon 1e-8 as in the paper's TensorFlow 1 code and PyTorch.
        return keras.optimizers.Adam(schedule, epsilon=1e-8)
    if training_config.optimizer == "momentum":
        return keras.optimizers.SGD(schedule, momentum=training_config.momentum)
    if training_config.optimizer == "sgd":
        return keras.optimizers.SGD(schedule)
    raise ValueError(f"--optimizer: unknown optimizer {training_config.optimizer!r}; known: adam, momentum, sgd")
