"""reinit: the parent's mask with its survivors randomly reinitialised (the paper's control).

The same mask, start iteration and data order as the parent's run; only the
initial values are a fresh draw of the architecture's initialisers. Winning
tickets beat it: what makes them win is the pairing of mask and initial values.
"""

from tf_lottery import branches
from tf_lottery.branches.base import Branch, Cell
from tf_lottery.training.run import InitialWeights


@branches.register
class Reinit(Branch):
    name = "reinit"
    description = "the parent's mask, survivors randomly reinitialised (the paper's control)"
    pruned_levels_only = True

    def runs(self, cell: Cell):
        _, start = self.parent_start(cell)
        fresh = InitialWeights.fresh(self.cell_seed(cell, "reinit"))
        return [self.spec(cell, cell.variant, self.parent.masks(cell.replicate, cell.level, cell.variant), fresh, start)]
