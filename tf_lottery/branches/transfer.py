"""transfer: a ticket trained on another dataset or with other training settings (Morcos et al. 2019).

"One ticket to win them all": is a winning ticket a property of the data it was
found on, or of the architecture? The branch takes each chosen (replicate, level,
variant) of the source experiment and trains, with the main-command flags it is
given (--dataset, --optimizer, --learning_rate, --iterations, ...) overriding the
source's, one run per --modes:

  ticket         the source mask and the survivors' source starting values (θ0, or
                 θk with --rewind_iteration): the transferred winning ticket;
  mask_only      the source mask from a fresh seeded initialisation;
  random_ticket  a random mask with the source's per-weight densities, from the same
                 fresh initialisation (Morcos et al.'s random-ticket control).

Every mode trains the target's whole schedule from iteration 0, with the source
replicate's data seed: with no overrides and k = 0, `ticket` is the source run
again (tested). Level 0 takes ticket and mask_only (a random mask at full density
is no mask).

The output layer transfers like every other layer when the target has as many
classes. With another class count (or --reinit_output) it is rebuilt: a fresh
seeded initialisation, and a mask at the source output layer's density drawn at
random (--output_mask=dense keeps it whole). A target with other input shapes is
refused unless the model is resolution-agnostic (global average pooling) and the
channel count is the same.

--compare_with names an experiment of the same model on the target (checked, and
recorded in every row): the report puts its own ticket (imp) at the same density
beside the transferred one.
"""

import collections
import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from tf_lottery import branches, models
from tf_lottery.branches.base import MEASURED, Branch, Cell
from tf_lottery.config import ConfigError, option
from tf_lottery.errors import UsageError
from tf_lottery.experiment import files
from tf_lottery.experiment.reader import Experiment
from tf_lottery.pruning import strategies
from tf_lottery.training.run import InitialWeights

MODES = ("ticket", "mask_only", "random_ticket")
COLUMNS = ("mode", "dataset", "optimizer", "learning_rate", "iterations", "output_layer", "run") + MEASURED + (
    "iterations_spent",)


@dataclasses.dataclass(frozen=True)
class TransferOptions:
    modes: Tuple[str, ...] = option(MODES, "What to train on the target: ticket (source mask and starting values), "
                                    "mask_only (source mask, fresh initialisation), random_ticket (random mask at "
                                    "the source's per-weight densities, fresh initialisation).")
    output_mask: str = option("random", "A rebuilt output layer's mask: random at the source output layer's "
                              "density, or dense.", choices=("random", "dense"))
    reinit_output: bool = option(False, "Rebuild the output layer (fresh initialisation) even when the target has "
                                 "as many classes as the source.")
    compare_with: str = option("", "An experiment of the same model on the target dataset: the report puts its own "
                               "ticket at the same density beside the transferred one.", hashed=False)

    def validate(self):
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise ConfigError(f"--modes: expected some of {','.join(MODES)}, got {','.join(self.modes) or 'nothing'}")
        if len(set(self.modes)) != len(self.modes):
            raise ConfigError("--modes: lists a mode twice")


@branches.register
class Transfer(Branch):
    name = "transfer"
    description = "the source's ticket, its mask alone and a random ticket, trained on another dataset or schedule"
    Options = TransferOptions
    columns = COLUMNS
    part_options = ("modes",)
    new_classes = True  # the output layer may be rebuilt for another class count

    def __init__(self, parent, options=None, overrides=None):
        if options is not None and options.compare_with:  # the report opens it from wherever it runs
            options = dataclasses.replace(options, compare_with=os.path.abspath(options.compare_with))
        super().__init__(parent, options, overrides)
        self.target = self._target_info()
        self.rebuilt = self.options.reinit_output or self.target.num_classes != parent.dataset.num_classes
        self.compared = self._compared()

    def _target_info(self):
        if self.config.data.dataset == self.parent.config.data.dataset:
            return self.parent.dataset
        from tf_lottery import data  # pylint: disable=import-outside-toplevel

        return data.for_config(self.config.data, read=False)

    def _compared(self) -> Optional[Experiment]:
        where = self.options.compare_with
        if not where:
            return None
        try:
            other = Experiment.open(where)
        except UsageError as error:
            raise UsageError(str(error).replace("--experiment_dir:", "--compare_with:", 1)) from None
        mine = (self.config.model.model, self.config.data.dataset)
        theirs = (other.config.model.model, other.config.data.dataset)
        if mine != theirs:
            raise UsageError(f"--compare_with: {where} trains {theirs[0]} on {theirs[1]}; this transfer trains "
                             f"{mine[0]} on {mine[1]}")
        return other

    # Parts and runs -----------------------------------------------------------

    def parts(self, cell: Cell) -> List[Cell]:
        return [dataclasses.replace(cell, part=mode) for mode in self.options.modes
                if not (cell.level == 0 and mode == "random_ticket")]

    def key(self, cell: Cell) -> str:
        return f"{cell.variant}_{cell.part}"

    def output_weights(self) -> Tuple[str, ...]:
        """Prefixes of the output layers' weights (paths and variable names)."""
        return tuple(f"{layer}/" for layer in models.spec(self.config.model.model).outputs)

    def target_masks(self, cell: Cell) -> files.Masks:
        """The source run's masks, the output layer's rebuilt when the output is (see the module doc)."""
        masks = collections.OrderedDict(self.parent.masks(cell.replicate, cell.level, cell.variant))
        if not self.rebuilt:
            return masks
        rng = np.random.default_rng(self.cell_seed(cell, "transfer_output_mask"))
        for name, mask in masks.items():
            if not name.startswith(self.output_weights()):
                continue
            shape = mask.shape[:-1] + (self.target.num_classes,) if name.endswith("/kernel") else mask.shape
            size = int(np.prod(shape))
            if self.options.output_mask == "dense":
                masks[name] = np.ones(shape, np.float32)
            else:
                flat = np.zeros(size, np.float32)
                flat[rng.permutation(size)[:int(round(np.count_nonzero(mask) / mask.size * size))]] = 1.0
                masks[name] = flat.reshape(shape)
        return masks

    def ticket_start(self, cell: Cell) -> InitialWeights:
        """The source run's starting weights; with a rebuilt output layer, a copy with fresh output weights."""
        path, label, _ = self.parent.start_of(cell.replicate, cell.level, cell.variant)
        if not self.rebuilt:
            return InitialWeights.from_file(path, label)
        return InitialWeights.from_file(self.folder(cell).run(self.run_name(cell)).initial_weights,
                                        f"{label}, output layer fresh")

    def run_name(self, cell: Cell) -> str:
        return f"{cell.variant}_{cell.part}"

    def runs(self, cell: Cell):
        masks = self.target_masks(cell)
        fresh = InitialWeights.fresh(self.cell_seed(cell, "transfer_init"))
        if cell.part == "ticket":
            init = self.ticket_start(cell)
        elif cell.part == "mask_only":
            init = fresh
        else:
            masks = strategies.random_masks(masks, self.cell_seed(cell, "transfer_mask"))
            init = fresh
        return [self.spec(cell, self.run_name(cell), masks, init, start_iteration=0)]

    def prepare(self, cell: Cell, bench):
        """A ticket with a rebuilt output layer starts from the source values with fresh output
        weights: written once into the run's folder, before it trains."""
        if cell.part != "ticket" or not self.rebuilt:
            return
        target = self.ticket_start(cell).file
        if bench.is_chief and not os.path.exists(target):
            from tf_lottery.training.workbench import fresh_weights  # pylint: disable=import-outside-toplevel

            path, _, _ = self.parent.start_of(cell.replicate, cell.level, cell.variant)
            source = dict(zip(files.read_weight_names(path), files.read_weights(path)))
            names, values = fresh_weights(self.config, bench.splits(self.config).info,
                                          self.cell_seed(cell, "transfer_output"))
            start = []
            for name, value in zip(names, values):
                kept = source.get(name)
                output = name.startswith(self.output_weights())
                if output or kept is None or kept.shape != value.shape:
                    if not output:
                        raise UsageError(f"--dataset: weight {name} of the source does not fit the target model")
                    start.append(value)
                else:
                    start.append(kept)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            files.write_weights(target, names, start)
        bench.barrier()

    # Measurement --------------------------------------------------------------

    def measure(self, cell: Cell, finished: Dict[str, dict], bench) -> List[dict]:
        del bench
        training = self.config.training
        rows = []
        for name, result in finished.items():
            row = {"mode": cell.part, "dataset": self.config.data.dataset, "optimizer": training.optimizer,
                   "learning_rate": training.learning_rate, "iterations": training.iterations,
                   "output_layer": "rebuilt" if self.rebuilt else "transferred", "run": name,
                   "density": result["density"], **{k: result.get(k) for k in MEASURED},
                   # a random ticket's mask cost nothing to find; the others are the source's
                   "iterations_spent": (int(result["iterations_trained"]) if cell.part == "random_ticket"
                                        else self.iterations_spent(cell, result))}
            rows.append(row)
        return rows
