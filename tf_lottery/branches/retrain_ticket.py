"""retrain_ticket: the parent's run again, trained to the end of its schedule.

The same mask, initial weights, start iteration and data order as the parent's run,
and no hooks: a level that Early-Bird ended when the next level's mask settled
(--early_bird) is trained through, giving the Early-Bird ticket its accuracy as a
trained network. Its iterations_spent is what the mask cost (the Early-Bird levels
before it, each ended early) plus this full run.
"""

from tf_lottery import branches
from tf_lottery.branches.base import Branch, Cell


@branches.register
class RetrainTicket(Branch):
    name = "retrain_ticket"
    description = "the parent's run (mask, initial weights, start, data order) trained to the end of its schedule"

    def runs(self, cell: Cell):
        init, start = self.parent_start(cell)
        masks = self.parent.masks(cell.replicate, cell.level, cell.variant)
        return [self.spec(cell, cell.variant, masks, init, start,
                          data_seed=self.parent.data_seed_of(cell.replicate, cell.level, cell.variant))]
