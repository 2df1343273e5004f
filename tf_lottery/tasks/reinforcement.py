"""Reinforcement learning: a policy network trained on a gymnasium environment (`--dataset=gym:<id>`).

Placeholder: the interface the engine calls. See the contract in the functions' docstrings.
"""

PREFIX = "gym:"


def is_environment(name: str) -> bool:
    return str(name).startswith(PREFIX)


def describe(name: str):
    """DatasetInfo(task='reinforcement', input_shape=(observation size,), num_classes=actions)."""
    raise NotImplementedError


def load(name: str):
    """data.Splits of an environment: its DatasetInfo and empty arrays."""
    raise NotImplementedError


def training_stream(config, data_seed: int, start_iteration: int):
    """What PolicyTrainer.train reads: the run's seeded episodes from `start_iteration` on."""
    raise NotImplementedError


def evaluation_sets(config, info) -> dict:
    """{'validation': ..., 'test': ...} for PolicyTrainer.evaluate."""
    raise NotImplementedError


class PolicyTrainer:  # pylint: disable=too-few-public-methods
    """loop.Trainer's interface for a policy trained by a policy-gradient method."""

    def __init__(self, strategy, model, config, info, wrap=None):
        raise NotImplementedError
