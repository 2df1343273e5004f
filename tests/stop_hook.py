"""A training hook that interrupts a run as a kill would, for the resumption tests."""

from tf_lottery.training.hooks import Hook


class StopAt(Hook):
    """Raises KeyboardInterrupt at `iteration`, leaving the run resumable from the checkpoint before it."""

    def __init__(self, iteration):
        self.iteration = iteration

    def next_stop(self, iteration):
        return self.iteration if iteration < self.iteration else None

    def at_stop(self, run, iteration):
        if iteration == self.iteration:
            raise KeyboardInterrupt
