"""reinit: the parent's mask with new starting values for its survivors (the paper's control and Zhou et al.'s).

The same mask, start iteration and data order as the parent's run; only what the
survivors start from changes, as --init says:

  fresh            (default) a fresh draw of the architecture's initialisers for every
                   weight: the lottery ticket paper's control;
  reshuffle        the run's initial values of each weight permuted among its kept positions;
  signed_reinit    a fresh draw everywhere, the prunable weights with the run's initial signs;
  signed_constant  alpha * sign(w_i) for the prunable weights, alpha the weight's standard
                   deviation at θ0;
  constant         the same alpha with random signs.

Where --init is not fresh, the weights the mask does not cover (biases, BatchNorm)
keep the run's initial values, so only the survivors differ. Winning tickets beat
fresh: what makes them win is the pairing of mask and initial values; Zhou et al.
find the signs carry most of it (signed_constant trains close to the ticket,
reshuffle and constant do not).
"""

import dataclasses
import os

import numpy as np

from tf_lottery import branches
from tf_lottery.branches.base import Branch, Cell
from tf_lottery.config import ConfigError, option
from tf_lottery.pruning import masks as masks_lib, prunable, survivors
from tf_lottery.training import checkpoints
from tf_lottery.training.run import InitialWeights
from tf_lottery.training.workbench import fresh_weights


@dataclasses.dataclass(frozen=True)
class ReinitOptions:
    init: str = option("fresh", "What the survivors start from: fresh (a new seeded initialisation, the paper's "
                       "control), reshuffle (the run's initial values permuted among each weight's kept positions), "
                       "signed_reinit (fresh values with the initial signs), signed_constant (alpha * sign(w_i), "
                       "alpha the weight's standard deviation at θ0), constant (alpha, random signs).",
                       choices=survivors.INITS)

    def validate(self):
        if self.init not in survivors.INITS:
            raise ConfigError(f"--init: unknown value {self.init!r}; known: {', '.join(survivors.INITS)}")


@branches.register
class Reinit(Branch):
    name = "reinit"
    description = "the parent's mask, survivors randomly reinitialised (the paper's control) or --init's values"
    Options = ReinitOptions
    pruned_levels_only = True

    def initial_file(self, cell: Cell) -> str:
        return os.path.join(self.folder(cell).directory, f"initial_{cell.variant}_{self.options.init}.npz")

    def runs(self, cell: Cell):
        _, start = self.parent_start(cell)
        if self.options.init == "fresh":
            init = InitialWeights.fresh(self.cell_seed(cell, "reinit"))
        else:
            init = InitialWeights.from_file(self.initial_file(cell), self.options.init)
        return [self.spec(cell, cell.variant, self.parent.masks(cell.replicate, cell.level, cell.variant), init, start)]

    def prepare(self, cell: Cell, bench):
        """Writes the survivors' starting values (once; every value is seeded, so any writer agrees)."""
        path = self.initial_file(cell)
        if self.options.init == "fresh" or os.path.exists(path):
            return
        init = self.options.init
        rng = np.random.default_rng(self.cell_seed(cell, f"init_{init}"))
        model = bench.trainer(self.config).model
        masks = self.parent.masks(cell.replicate, cell.level, cell.variant)
        checkpoints.load_weights(model, self.parent.paths.theta_init(cell.replicate))
        alphas = survivors.init_scales(masks_lib.prunable_values(model))
        if init == "signed_reinit":
            _, values = fresh_weights(self.config, bench.splits(self.config).info, self.cell_seed(cell, "reinit"))
            checkpoints.assign_weights(model, values, source="a fresh initialisation")
            fresh = masks_lib.prunable_values(model)
        start_file, _ = self.parent_start(cell)
        checkpoints.load_weights(model, start_file.file)
        initial = masks_lib.prunable_values(model)
        if init == "reshuffle":
            new = survivors.reshuffle(initial, masks, rng)
        elif init == "signed_constant":
            new = survivors.signed_constant(initial, alphas)
        elif init == "constant":
            new = survivors.constant(initial, alphas, rng)
        else:  # signed_reinit: the fresh draw everywhere, the prunable weights with the initial signs
            checkpoints.assign_weights(model, values, source="a fresh initialisation")
            new = survivors.signed_reinit(initial, fresh)
        for weight in prunable.prunable_weights(model):
            weight.variable.assign(new[weight.path])
        if bench.is_chief:
            checkpoints.save_weights(model, path)
        bench.barrier()
