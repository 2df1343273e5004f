"""random_prune: a random mask with the parent's per-weight densities (the paper's control).

Each prunable weight keeps as many survivors as in the parent's mask, at positions
drawn at random; initial weights, start iteration and data order are the parent
run's. Winning tickets beat it: which weights survive matters, not only how many.
"""

from tf_lottery import branches
from tf_lottery.branches.base import Branch, Cell
from tf_lottery.pruning import strategies


@branches.register
class RandomPrune(Branch):
    name = "random_prune"
    description = "a random mask at the parent's per-weight densities, the parent's initial weights (the paper's control)"
    pruned_levels_only = True

    def runs(self, cell: Cell):
        init, start = self.parent_start(cell)
        masks = strategies.random_masks(self.parent.masks(cell.replicate, cell.level, cell.variant),
                                        self.cell_seed(cell, "random_prune"))
        return [self.spec(cell, cell.variant, masks, init, start)]
