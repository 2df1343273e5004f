"""random_prune: a random mask with the parent's per-weight densities (the paper's control).

Each prunable weight keeps as many survivors as in the parent's mask, at positions
drawn at random (structured parents: as many units of each layer, or weights of
every block of M, drawn at random); initial weights, start iteration and data order are the parent
run's. Winning tickets beat it: which weights survive matters, not only how many.
"""

from tf_lottery import branches
from tf_lottery.branches.base import Branch, Cell
import numpy as np

from tf_lottery.errors import RunError
from tf_lottery.pruning import strategies, structure


@branches.register
class RandomPrune(Branch):
    name = "random_prune"
    description = "a random mask at the parent's per-weight densities, the parent's initial weights (the paper's control)"
    pruned_levels_only = True

    def runs(self, cell: Cell):
        init, start = self.parent_start(cell)
        masks = random_like(self.parent, self.parent.masks(cell.replicate, cell.level, cell.variant),
                            self.cell_seed(cell, "random_prune"))
        return [self.spec(cell, cell.variant, masks, init, start)]


def random_like(parent, like, seed: int):
    """A random mask with `like`'s counts in the parent's --pruning_structure: per weight (unstructured),
    per unit group (neurons, channels: as many random units, then their weight mask) or per block
    of M (n_of_m: as many random weights of every M)."""
    pruning = parent.config.pruning
    if pruning.pruning_structure == "n_of_m":
        return structure.random_n_of_m(like, pruning.n_of_m[1], seed)
    if pruning.structured():
        groups = structure.read_groups(parent.paths.root)
        if groups is None:
            raise RunError(f"{structure.structure_file(parent.paths.root)} is missing: run the experiment's imp "
                           "loop again to write it")
        kept = structure.random_units(groups, structure.kept_units(groups, like), seed)
        ones = {name: np.ones_like(mask, np.float32) for name, mask in like.items()}
        return structure.weight_masks(groups, kept, ones)
    return strategies.random_masks(like, seed)
