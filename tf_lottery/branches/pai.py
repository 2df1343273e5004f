"""pai: pruning at initialisation, scored at θ0, pruned once to each level's density, trained once.

For each chosen pruned level and each (--method, --ablation) part, the replicate's θ0
is scored with all masks ones and pruned in one go (SynFlow: over --synflow_rounds
rounds) to exactly the level's counts, per weight (layerwise) or per group of equal
rate (global), as the experiment prunes: the parent's imp mask at that level keeps
the same counts. The network then trains once, the experiment's whole schedule from
iteration 0 and the replicate's data order, whatever --retrain says (there is no
earlier training to rewind to); iterations_spent is that run's alone.

  --method    snip (|Σ g ⊙ θ|), grasp (θ ⊙ Hg, temperature --grasp_temperature), synflow
              (data-free, iterative), magnitude_init (|θ0|), random (seeded scores);
              snip and grasp read the first --score_batches batches the run trains on;
  --ablation  Frankle et al. (2021): none; shuffle_layerwise (each weight's mask shuffled,
              its count kept); reinit (the mask trained from a fresh initialisation);
              invert (the lowest scores kept).

prepare() writes each part's mask as its run's mask.npz before the run starts (the
trainer keeps a mask.npz it finds), so scores are computed once per part and a
resumed or rerun part reads them back. Scores: tf_lottery.pruning.scores.
"""

import dataclasses
import os
from typing import Dict, List, Tuple

import numpy as np

from tf_lottery import branches, data
from tf_lottery.branches.base import MEASURED, Branch, Cell
from tf_lottery.config import ConfigError, option
from tf_lottery.data import pipeline
from tf_lottery.errors import RunError, UsageError
from tf_lottery.lottery.plan import build_model
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.pruning import scores as scores_lib
from tf_lottery.pruning import strategies
from tf_lottery.training import checkpoints
from tf_lottery.training import run as run_lib
from tf_lottery.training.run import InitialWeights

METHODS = ("snip", "grasp", "synflow", "magnitude_init", "random")
ABLATIONS = ("none", "shuffle_layerwise", "reinit", "invert")
DATA_METHODS = ("snip", "grasp")  # the methods that read training batches


@dataclasses.dataclass(frozen=True)
class PaiOptions:
    method: Tuple[str, ...] = option(("snip",), "Pruning-at-initialisation methods, a part each: snip, grasp, "
                                     "synflow, magnitude_init (|θ0|), random.", choices=METHODS)
    ablation: Tuple[str, ...] = option(("none",), "Ablations of each method's mask (Frankle et al. 2021), a part "
                                       "each: none, shuffle_layerwise, reinit (trained from a fresh init), invert "
                                       "(the lowest scores kept).", choices=ABLATIONS)
    score_batches: int = option(1, "Training batches (the first the run trains on) SNIP and GraSP score on; 1 is "
                                "SNIP's one mini-batch: 6-13 examples per class at the recipes' batch sizes (60-128), "
                                "about GraSP's 10 per class.")
    synflow_rounds: int = option(100, "SynFlow's pruning rounds (round k of R keeps density d^(k/R)).")
    grasp_temperature: float = option(200.0, "GraSP's softmax temperature (its authors' 200).")

    def validate(self):
        for flag, values, known in (("method", self.method, METHODS), ("ablation", self.ablation, ABLATIONS)):
            unknown = [v for v in values if v not in known]
            if unknown or not values:
                raise ConfigError(f"--{flag}: expected some of {', '.join(known)}, got {','.join(values) or 'nothing'}")
            if len(set(values)) != len(values):
                raise ConfigError(f"--{flag}: lists a value twice")
        if self.score_batches < 1:
            raise ConfigError(f"--score_batches: must be >= 1, got {self.score_batches}")
        if self.synflow_rounds < 1:
            raise ConfigError(f"--synflow_rounds: must be >= 1, got {self.synflow_rounds}")
        if not 0 < self.grasp_temperature < float("inf"):
            raise ConfigError(f"--grasp_temperature: must be > 0, got {self.grasp_temperature}")


@branches.register
class Pai(Branch):
    name = "pai"
    description = ("pruning at initialisation (SNIP, GraSP, SynFlow, magnitude, random) to each level's counts, "
                   "trained once from θ0; Frankle et al.'s ablations")
    Options = PaiOptions
    columns = ("run", "method", "ablation") + MEASURED + ("iterations_spent",)
    pruned_levels_only = True
    part_options = ("method", "ablation")

    def __init__(self, parent, options=None, overrides=None):
        super().__init__(parent, options, overrides)
        self._model = None  # the scoring model, built on first use
        self._masks: Dict[tuple, masks_lib.Masks] = {}  # (replicate, level, method, inverted): shared by ablations

    # Parts and runs ------------------------------------------------------------

    def parts(self, cell: Cell) -> List[Cell]:
        return [dataclasses.replace(cell, part=(m, a)) for m in self.options.method for a in self.options.ablation]

    def required_run(self, cell: Cell):
        if cell.variant != "imp":  # its masks come from θ0 alone: another variant would repeat imp's runs
            raise UsageError(f"--variants: branch pai prunes θ0 itself, whatever the variant; use --variants=imp, "
                             f"not {cell.variant}")
        return super().required_run(cell)

    def key(self, cell: Cell) -> str:
        method, ablation = cell.part
        return method if ablation == "none" else f"{method}-{ablation}"

    def runs(self, cell: Cell):
        name = self.key(cell)
        init = (InitialWeights.fresh(self.cell_seed(cell, "pai_reinit")) if cell.part[1] == "reinit"
                else self.dense_start(cell.replicate, 0))
        path = self.folder(cell).run(name).mask
        masks = masks_lib.MaskFile(path, "branch pai writes it in prepare(), before the run",
                                   recover=f"delete {os.path.dirname(path)} to prune again")
        spec = self.spec(cell, name, masks, init, 0)
        return [dataclasses.replace(spec, config=self.config)]  # the whole schedule, whatever --retrain says

    def iterations_spent(self, cell: Cell, *results: dict) -> int:
        """The run's own iterations: its mask is computed at θ0 and costs no training."""
        del cell
        return sum(int(r["iterations_trained"]) for r in results)

    def measure(self, cell: Cell, finished: Dict[str, dict], bench) -> List[dict]:
        method, ablation = cell.part
        return [{**row, "method": method, "ablation": ablation} for row in super().measure(cell, finished, bench)]

    # Masks ---------------------------------------------------------------------

    def prepare(self, cell: Cell, bench):
        path = self.folder(cell).run(self.key(cell)).mask
        if bench.is_chief and not os.path.exists(path):
            masks_lib.save(path, self.part_mask(cell, bench))
        bench.barrier()  # every worker, whether or not the chief computed: the run reads the file

    def part_mask(self, cell: Cell, bench) -> masks_lib.Masks:
        """The mask the part trains: the method's at θ0 (inverted for invert), shuffled for shuffle_layerwise."""
        method, ablation = cell.part
        inverted = ablation == "invert"
        key = (cell.replicate, cell.level, method, inverted)
        if key not in self._masks:
            self._masks[key] = self.method_mask(cell, bench, method, inverted)
        mask = self._masks[key]
        if ablation == "shuffle_layerwise":
            mask = strategies.random_masks(mask, self.cell_seed(cell, f"pai_shuffle_{method}"))
        self.check_counts(cell, mask)
        return mask

    def method_mask(self, cell: Cell, bench, method: str, inverted: bool) -> masks_lib.Masks:
        model = self.scoring_model(cell)
        ones, group_list = masks_lib.ones_like_model(model), self.groups(model)
        if method == "synflow":
            return scores_lib.synflow_masks(model, group_list, cell.level, self.options.synflow_rounds, inverted)
        if method == "snip":
            scores = scores_lib.snip(model, self.score_batches(cell, bench))
        elif method == "grasp":
            scores = scores_lib.grasp(model, self.score_batches(cell, bench), self.options.grasp_temperature)
        elif method == "magnitude_init":
            scores = scores_lib.magnitude(model)
        else:
            scores = scores_lib.random(model, self.cell_seed(cell, "pai_random"))
        if inverted:
            scores = {path: -np.asarray(s, np.float64) for path, s in scores.items()}
        return strategies.ranked_masks(scores, ones, group_list, cell.level)

    def groups(self, model) -> List[strategies.Group]:
        pruning = self.config.pruning
        return strategies.groups(strategies.weight_rates(model, pruning), pruning.pruning_scope)

    def model(self):
        """The scoring model: a plain (undistributed, float32) model of the experiment, built once."""
        if self._model is None:
            info = data.for_config(self.config.data, read=False)  # metadata, no data read
            self._model = build_model(self.config, info)
        return self._model

    def scoring_model(self, cell: Cell):
        """The scoring model at the replicate's θ0, all masks ones."""
        model = self.model()
        checkpoints.load_weights(model, self.dense_start(cell.replicate, 0).file)
        masks_lib.apply_masks(model, masks_lib.ones_like_model(model))
        return model

    def score_batches(self, cell: Cell, bench) -> list:
        """The first --score_batches batches the part's run trains on (its data order, augmented as it is)."""
        config = self.config
        splits = bench.splits(config)
        dataset = pipeline.training_dataset(
            splits.train_images, splits.train_labels, splits.info, batch_size=config.data.batch_size,
            seed=config.data_seed(cell.replicate), augment=run_lib.training_augmentation(config))
        return list(dataset.take(self.options.score_batches))

    def check_counts(self, cell: Cell, mask: masks_lib.Masks):
        """Each group keeps what the parent's imp mask of the level keeps (per weight when layerwise)."""
        parent = self.parent.masks(cell.replicate, cell.level, "imp")
        for names, _ in self.groups(self.model()):
            kept, expected = (sum(int(np.count_nonzero(m[n])) for n in names) for m in (mask, parent))
            if kept != expected:
                raise RunError(f"branch pai: {'+'.join(names)} keeps {kept} weights at level {cell.level}, "
                               f"the parent's imp mask {expected}")
