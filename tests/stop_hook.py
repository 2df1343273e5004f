"""A training hook that interrupts a run as a kill would, and the one dense run the resumption tests train."""

import os

from tf_lottery.experiment import files
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training.hooks import Hook
from tf_lottery.training.run import InitialWeights, RunSpec, train
from tf_lottery.training.workbench import Workbench, fresh_weights


class StopAt(Hook):
    """Raises KeyboardInterrupt at `iteration`, leaving the run resumable from the checkpoint before it."""

    def __init__(self, iteration):
        self.iteration = iteration

    def next_stop(self, iteration):
        return self.iteration if iteration < self.iteration else None

    def at_stop(self, run, iteration):
        if iteration == self.iteration:
            raise KeyboardInterrupt


def train_dense(config, root, name, hooks=(), seed=3, data_seed=0, strategy=None):
    """Trains (or resumes) the unpruned run `root`/`name` from a θ `root`/theta.npz drawn once with `seed`
    (under `strategy`; None: the default); returns its result."""
    with Workbench(strategy, root) as bench:
        theta = os.path.join(root, "theta.npz")
        if not os.path.exists(theta):
            files.write_weights(theta, *fresh_weights(config, bench.splits(config).info, seed=seed))
        spec = RunSpec(directory=os.path.join(root, name), config=config, replicate=0, level=0, name=name,
                       masks=masks_lib.ones_like_model(bench.trainer(config).model),
                       init=InitialWeights.from_file(theta, "theta"), data_seed=data_seed)
        return train(spec, bench, hooks)
