"""Reinforcement learning: a policy network trained on a gymnasium environment (`--dataset=gym:<id>`).

Method: REINFORCE (Williams 1992) with a time-dependent baseline, for Yu et al. 2020's
classic-control tickets. It needs no critic, so the only network is the pruned policy
and a ticket is exactly its masked weights; PPO or actor-critic methods would add a
value network whose pruning the ticket experiments would have to decide too. On
CartPole-v1 it solves the task (mean return 475 over 100 episodes) in about 70 updates
of 16 episodes (flags/cartpole.cfg).

* One iteration is one policy update from `--batch_size` fresh episodes (on-policy).
* Advantage of step t of an episode: its discounted return-to-go G_t (discount 0.99)
  minus the mean G_t of the batch's episodes still running at t. The baseline depends
  on t only, so a step near the time limit (whose G_t is small because the episode is
  cut, not because it failed) is compared with the other episodes at that time.
  Averaging over all running episodes, itself included, scales the leave-one-out
  advantage by (n_t - 1) / n_t: unbiased up to that factor.
* Loss: -(1/episodes) * sum over the batch's steps of log pi(a_t | s_t) * A_t, through
  the masked Keras model, so MaskConstraint keeps pruned weights at 0 after every step.
  No entropy bonus: with a time-dependent baseline CartPole did not need one.

Reproducible and resumable: update t's episodes depend only on (data seed, t) and the
weights. Episode e of update t resets its environment from SeedSequence([seed, t, e])
(an odd seed), its actions are sampled from a numpy Generator seeded by [seed, t];
the rollout's policy is numpy on the model's current (already masked) weights.

Evaluation: validation is the mean return of the last 100 training episodes (the
usual "solved" criterion: CartPole-v1 at 475), read from the trainer's state, so
early stopping (minimum validation loss = -return) picks the iteration of highest
return; test is the greedy (argmax) policy on TEST_EPISODES episodes reset from the
even seeds 0, 2, 4, ..., which no training episode uses.
"""

import dataclasses
import functools
from typing import Callable, List, Sequence, Tuple

import numpy as np

PREFIX = "gym:"
DISCOUNT = 0.99
WINDOW = 100  # training episodes the validation return averages (gymnasium's "solved" criterion)
TEST_EPISODES = 20


def is_environment(name: str) -> bool:
    return str(name).startswith(PREFIX)


def _data_error(message: str):
    from tf_lottery.data.sources import DataError  # pylint: disable=import-outside-toplevel

    return DataError(message)


def make_env(name: str):
    """A gymnasium environment for `gym:<id>`; a one-line DataError when it cannot be made or used."""
    try:
        import gymnasium  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise _data_error(f"--dataset: {name} needs gymnasium (pip install gymnasium)") from None
    env_id = str(name)[len(PREFIX):]
    try:
        env = gymnasium.make(env_id, disable_env_checker=True)
    except Exception as error:  # gymnasium's NameNotFound, missing extras, bad arguments
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise _data_error(f"--dataset: unknown gymnasium environment {env_id!r} ({first})") from None
    if not isinstance(env.action_space, gymnasium.spaces.Discrete):
        raise _data_error(f"--dataset: {env_id} has {type(env.action_space).__name__} actions; "
                          "policies here choose among discrete actions")
    if not isinstance(env.observation_space, gymnasium.spaces.Box) or len(env.observation_space.shape) != 1:
        raise _data_error(f"--dataset: {env_id} observations are not a flat Box; policies here read vectors")
    return env


@functools.lru_cache(maxsize=8)
def _spaces(name: str) -> Tuple[int, int, float]:
    """(observation size, actions, reward threshold: inf when the environment has none)."""
    env = make_env(name)
    threshold = env.spec.reward_threshold if env.spec is not None else None
    spaces = (int(env.observation_space.shape[0]), int(env.action_space.n),
              float("inf") if threshold is None else float(threshold))
    env.close()
    return spaces


def describe(name: str):
    """DatasetInfo(task='reinforcement', input_shape=(observation size,), num_classes=actions)."""
    from tf_lottery import data  # pylint: disable=import-outside-toplevel

    size, actions, _ = _spaces(name)
    return data.DatasetInfo(name=name, input_shape=(size,), num_classes=actions, task="reinforcement")


def availability(name: str) -> str:
    """The dry run's data line of an environment (nothing to download: gymnasium builds it in-process)."""
    from tf_lottery.data.sources import DataError  # pylint: disable=import-outside-toplevel

    try:
        size, actions, threshold = _spaces(name)
    except DataError as error:
        return f"data: unavailable; a run would stop with: {error}"
    solved = f", solved at a mean return of {threshold:g} over {WINDOW} episodes" if np.isfinite(threshold) else ""
    return f"data: gymnasium environment {name[len(PREFIX):]}: observations of {size}, {actions} actions{solved}"


def load(name: str):
    """data.Splits of an environment: its DatasetInfo and empty arrays (episodes are played, not read)."""
    from tf_lottery import data  # pylint: disable=import-outside-toplevel

    info = describe(name)
    empty_x, empty_y = np.zeros((0, *info.input_shape), np.float32), np.zeros((0,), np.int64)
    indices = np.zeros((0,), np.int64)
    return data.Splits(info=info, train_images=empty_x, train_labels=empty_y, validation_images=empty_x,
                       validation_labels=empty_y, test_images=empty_x, test_labels=empty_y,
                       train_indices=indices, validation_indices=indices)


# The policy as numpy ----------------------------------------------------------------------------

_ACTIVATIONS = {"linear": lambda x: x, "relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh}


def policy_layers(model) -> List[Tuple[str, np.ndarray, np.ndarray, str]]:
    """The model as ('dense', kernel, bias, activation) / ('flatten', ...) steps, from its current weights."""
    steps = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind == "Flatten":
            steps.append(("flatten", None, None, "linear"))
            continue
        activation = getattr(getattr(layer, "activation", None), "__name__", None)
        if kind != "Dense" or activation not in _ACTIVATIONS:
            from tf_lottery.config import ConfigError  # pylint: disable=import-outside-toplevel

            raise ConfigError(f"--model: {model.name} has a {kind} layer ({layer.name}); reinforcement learning "
                              "plays episodes with Dense policies (policy_mlp, mlp)")
        bias = layer.bias.numpy() if layer.use_bias else np.zeros(layer.units, np.float32)
        steps.append(("dense", layer.kernel.numpy(), bias, activation))
    return steps


def logits_of(steps, observations: np.ndarray) -> np.ndarray:
    x = observations.astype(np.float32)
    for kind, kernel, bias, activation in steps:
        x = x.reshape(len(x), -1) if kind == "flatten" else _ACTIVATIONS[activation](x @ kernel + bias)
    return x


def sampler(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """Draws an action per row of logits from its softmax, one uniform number per row."""

    def choose(logits):
        z = logits.astype(np.float64)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
        cdf[:, -1] = 1.0
        return (rng.random(len(z))[:, None] < cdf).argmax(axis=1)

    return choose


def greedy(logits: np.ndarray) -> np.ndarray:
    return logits.argmax(axis=1)


@dataclasses.dataclass(frozen=True)
class Episode:
    observations: np.ndarray  # [T, observation size] float32
    actions: np.ndarray  # [T] int64
    rewards: np.ndarray  # [T] float64

    @property
    def total(self) -> float:
        return float(self.rewards.sum())


def play(envs: Sequence, seeds: Sequence[int], steps, choose) -> List[Episode]:
    """One episode per environment, reset from its seed, all stepped together until each ends."""
    obs = np.stack([np.asarray(env.reset(seed=int(seed))[0], np.float32) for env, seed in zip(envs, seeds)])
    record = [([], [], []) for _ in envs]
    active = list(range(len(envs)))
    while active:
        actions = choose(logits_of(steps, obs[active]))
        running = []
        for i, action in zip(active, actions):
            observation, reward, terminated, truncated, _ = envs[i].step(int(action))
            record[i][0].append(obs[i].copy())
            record[i][1].append(int(action))
            record[i][2].append(float(reward))
            obs[i] = observation
            if not (terminated or truncated):
                running.append(i)
        active = running
    return [Episode(np.asarray(o, np.float32).reshape(len(o), -1), np.asarray(a, np.int64), np.asarray(r, np.float64))
            for o, a, r in record]


# Returns and advantages -------------------------------------------------------------------------

def returns_to_go(rewards: np.ndarray, discount: float = DISCOUNT) -> np.ndarray:
    """G_t = r_t + discount * G_{t+1}, G_T = 0."""
    out, running = np.zeros(len(rewards)), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + discount * running
        out[t] = running
    return out


def advantages(episodes: Sequence[Episode], discount: float = DISCOUNT) -> List[np.ndarray]:
    """G_t minus the mean G_t over the episodes still running at step t, per episode."""
    returns = [returns_to_go(e.rewards, discount) for e in episodes]
    longest = max(len(g) for g in returns)
    totals, running = np.zeros(longest), np.zeros(longest)
    for g in returns:
        totals[:len(g)] += g
        running[:len(g)] += 1
    baseline = totals / np.maximum(running, 1)
    return [g - baseline[:len(g)] for g in returns]


@dataclasses.dataclass(frozen=True)
class Batch:
    """One update's steps, concatenated episode by episode."""

    observations: np.ndarray  # float32 [steps, observation size]
    actions: np.ndarray  # int64 [steps]
    advantages: np.ndarray  # float32 [steps]
    returns: np.ndarray  # float64 [episodes]: each episode's undiscounted return


def make_batch(episodes: Sequence[Episode], discount: float = DISCOUNT) -> Batch:
    return Batch(np.concatenate([e.observations for e in episodes]), np.concatenate([e.actions for e in episodes]),
                 np.concatenate(advantages(episodes, discount)).astype(np.float32),
                 np.asarray([e.total for e in episodes], np.float64))


# Seeds, the training stream and the evaluation sets ---------------------------------------------

def training_seed(data_seed: int, update: int, episode: int) -> int:
    """The reset seed of episode `episode` of update `update`: odd, so never a test seed."""
    word = int(np.random.SeedSequence([int(data_seed), int(update), int(episode)]).generate_state(1, np.uint64)[0])
    return 2 * word + 1


TEST_SEEDS = tuple(2 * i for i in range(TEST_EPISODES))


class EpisodeStream:
    """The run's training episodes from update `start` on; `collect` plays the next update's batch."""

    def __init__(self, name: str, data_seed: int, start: int, episodes: int):
        self.name, self.data_seed, self.update, self.episodes = name, int(data_seed), int(start), int(episodes)
        self.envs = [make_env(name) for _ in range(self.episodes)]

    def collect(self, steps, discount: float = DISCOUNT) -> Batch:
        t = self.update
        seeds = [training_seed(self.data_seed, t, e) for e in range(self.episodes)]
        episodes = play(self.envs, seeds, steps, sampler(np.random.default_rng([self.data_seed, t])))
        self.update += 1
        return make_batch(episodes, discount)


def training_stream(config, data_seed: int, start_iteration: int) -> EpisodeStream:
    """What PolicyTrainer.train reads: the run's seeded episodes from `start_iteration` on."""
    return EpisodeStream(config.data.dataset, data_seed, start_iteration, config.data.batch_size)


@dataclasses.dataclass(frozen=True)
class RecentEpisodes:
    """Validation: the mean return of the last `window` training episodes; solved at `threshold`."""

    window: int
    threshold: float


@dataclasses.dataclass(frozen=True)
class GreedyEpisodes:
    """Test: the greedy policy's mean return over episodes reset from `seeds`."""

    name: str
    seeds: Tuple[int, ...]


def evaluation_sets(config, info) -> dict:
    """{'validation': RecentEpisodes, 'test': GreedyEpisodes} for PolicyTrainer.evaluate."""
    return {"validation": RecentEpisodes(WINDOW, _spaces(info.name)[2]), "test": GreedyEpisodes(info.name, TEST_SEEDS)}


def __getattr__(name):
    # PolicyTrainer needs TensorFlow: loaded when the engine asks for it, not when data imports this module.
    if name == "PolicyTrainer":
        from tf_lottery.tasks.reinforcement_trainer import PolicyTrainer  # pylint: disable=import-outside-toplevel

        return PolicyTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
