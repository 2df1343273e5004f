"""PolicyTrainer: training.loop.Trainer's interface for a policy trained by REINFORCE.

The method, seeds and evaluation are described in tf_lottery.tasks.reinforcement. The
running state a resumed run must find again is kept in variables the run checkpoint
tracks under loop.Trainer's names: `train_loss` holds the sums since the last
evaluation (loss, returns, episodes), `train_accuracy` the returns of the last 100
training episodes that validation reads (EpisodeWindow), so both survive kill -9.
"""

import math

import numpy as np
import tensorflow as tf

from tf_lottery.config import ConfigError
from tf_lottery.errors import RunError
from tf_lottery.tasks import reinforcement as rl
from tf_lottery.training import schedules


def policy_gradient_loss(logits, actions, advantages, episodes):
    """-(1/episodes) * sum_t log pi(a_t | s_t) * A_t: its gradient is REINFORCE's estimate of -grad J."""
    log_pi = -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=actions, logits=tf.cast(logits, tf.float32))
    return -tf.reduce_sum(log_pi * advantages) / episodes


class EpisodeWindow(tf.Module):
    """The returns of the last `size` training episodes, a ring buffer in variables (checkpointed)."""

    def __init__(self, size: int, name: str = "episode_window"):
        super().__init__(name=name)
        self.size = int(size)
        self.returns = tf.Variable(tf.zeros([self.size], tf.float64), trainable=False, name="returns")
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count")

    def clear(self):
        self.returns.assign(tf.zeros_like(self.returns))
        self.count.assign(0)

    def add(self, returns: np.ndarray):
        buffer, count = self.returns.numpy(), int(self.count.numpy())
        for value in returns:
            buffer[count % self.size] = value
            count += 1
        self.returns.assign(buffer)
        self.count.assign(count)

    def values(self) -> np.ndarray:
        """The returns held, oldest first."""
        count, buffer = int(self.count.numpy()), self.returns.numpy()
        if count <= self.size:
            return buffer[:count]
        start = count % self.size
        return np.concatenate([buffer[start:], buffer[:start]])


class RunningSums(tf.Module):
    """Loss, returns and episodes since the last evaluation (`reset_state`), in variables (checkpointed)."""

    def __init__(self, name: str = "running_sums"):
        super().__init__(name=name)
        self.loss = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss")
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
        self.returns = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="returns")
        self.episodes = tf.Variable(0, dtype=tf.int64, trainable=False, name="episodes")

    def reset_state(self):
        for variable in (self.loss, self.updates, self.returns, self.episodes):
            variable.assign(tf.zeros_like(variable))

    def add(self, loss: float, returns: np.ndarray):
        self.loss.assign_add(float(loss))
        self.updates.assign_add(1)
        self.returns.assign_add(float(np.sum(returns)))
        self.episodes.assign_add(len(returns))

    def result(self) -> dict:
        updates, episodes = int(self.updates.numpy()), int(self.episodes.numpy())
        return {"loss": float(self.loss.numpy()) / updates if updates else math.nan,
                "return": float(self.returns.numpy()) / episodes if episodes else math.nan,
                "episodes": float(episodes)}


class PolicyTrainer:
    """Runs policy updates (one iteration each) and evaluations of a masked policy model."""

    jit_compile = False

    def __init__(self, strategy: tf.distribute.Strategy, model, config, info, wrap=None):
        """Create it under `strategy.scope()` (one replica: episodes are played on the host)."""
        if strategy.num_replicas_in_sync != 1:
            raise ConfigError(f"--strategy: reinforcement learning trains on one replica, not "
                              f"{strategy.num_replicas_in_sync}")
        if config.run.mixed_precision != "float32":
            raise ConfigError("--mixed_precision: reinforcement learning trains in float32")
        if wrap is not None:
            raise ConfigError("reinforcement learning trains the masked model itself; "
                              "branches that wrap it (gmp) do not apply")
        if config.run.jit_compile == "on":
            raise ConfigError("--jit_compile=on: policy updates are not compiled with XLA; use auto or off")
        if config.training.bn_l1 > 0:
            raise ConfigError("--bn_l1: policy networks have no BatchNorm scales to penalise")
        rl.policy_layers(model)  # refuses a model it cannot play in numpy before anything trains
        self.strategy, self.model, self.forward_model, self.info = strategy, model, model, info
        self.weight_decay = float(config.training.weight_decay)
        with strategy.scope():
            self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
            self.schedule = schedules.from_config(config.training, self.iteration)
            self.optimizer = schedules.make_optimizer(config.training, self.schedule)
            self.optimizer.build(model.trainable_variables)
            self.train_loss = RunningSums()
            self.train_accuracy = EpisodeWindow(rl.WINDOW)  # the checkpoint's name for the episode history
        self.window = self.train_accuracy
        self._test_envs = {}
        spec = [tf.TensorSpec([None, *info.input_shape], tf.float32), tf.TensorSpec([None], tf.int64),
                tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.float32)]
        self._step = tf.function(self._step_fn, input_signature=spec)

    def reset(self, start_iteration: int):
        """Fresh optimizer state, sums and episode history; the schedule and episodes resume at `start_iteration`."""
        for variable in self.optimizer.variables:
            variable.assign(tf.zeros_like(variable))
        self.iteration.assign(start_iteration)
        self.window.clear()
        self.reset_train_metrics()

    def reset_train_metrics(self):
        """Clears the sums since the last evaluation; the last 100 episodes stay (validation reads them)."""
        self.train_loss.reset_state()

    def learning_rate(self) -> float:
        return float(self.schedule())

    def _step_fn(self, observations, actions, advantages, episodes):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(observations, training=True)
            loss = policy_gradient_loss(logits, actions, advantages, episodes)
            objective = loss
            if self.weight_decay > 0:  # coupled L2, as loop.Trainer's
                objective += 0.5 * self.weight_decay * tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])
        self.optimizer.apply_gradients(zip(tape.gradient(objective, variables), variables))
        return loss

    def train(self, iterator: rl.EpisodeStream, steps: int):
        """`steps` policy updates, each from the stream's next batch of episodes."""
        for _ in range(int(steps)):
            iteration = int(self.iteration.numpy())
            if iterator.update != iteration:
                raise RunError(f"the episode stream is at update {iterator.update}, the run at iteration {iteration}")
            batch = iterator.collect(rl.policy_layers(self.model))
            loss = self._step(tf.constant(batch.observations), tf.constant(batch.actions),
                              tf.constant(batch.advantages), tf.constant(float(len(batch.returns)), tf.float32))
            self.train_loss.add(float(loss), batch.returns)
            self.window.add(batch.returns)
            self.iteration.assign_add(1)

    def train_metrics(self) -> dict:
        """{'loss': mean policy-gradient loss, 'return': mean return, 'episodes'} since the last evaluation."""
        return self.train_loss.result()

    def evaluate(self, split) -> dict:
        """Validation (RecentEpisodes): {'loss': -mean, 'return', 'solved'} of the last 100 training episodes
        (loss NaN and no return before any). Test (GreedyEpisodes): {'loss': -mean, 'return'} of the greedy policy."""
        if isinstance(split, rl.RecentEpisodes):
            returns = self.window.values()
            if not len(returns):  # no return yet: a NaN would be the max summaries takes of the returns
                return {"loss": math.nan, "solved": 0.0}
            mean = float(np.mean(returns))
            solved = len(returns) >= split.window and mean >= split.threshold
            return {"loss": -mean, "return": mean, "solved": 1.0 if solved else 0.0}
        if isinstance(split, rl.GreedyEpisodes):
            if split not in self._test_envs:
                self._test_envs[split] = [rl.make_env(split.name) for _ in split.seeds]
            episodes = rl.play(self._test_envs[split], split.seeds, rl.policy_layers(self.model), rl.greedy)
            mean = float(np.mean([e.total for e in episodes]))
            return {"loss": -mean, "return": mean}
        raise TypeError(f"PolicyTrainer cannot evaluate a {type(split).__name__}")
