"""supermask: masks that make the untrained network work (Zhou, Lan, Liu, Yosinski 2019).

Two parts, chosen with --supermask (untrained by default; untrained,learned for both):

  untrained  θ0 (or, with --weights=signed_constant, α·sign(θ0) per prunable weight,
             α the standard deviation of that weight's θ0 values, 0 counted as positive,
             as reinit's --init=signed_constant; biases keep θ0) under
             the mask --supermask_criterion (large_final_same_sign by default) gives at
             the cell's level, evaluated without any training. The mask is one-shot from
             the dense level-0 run, as the paper's: w_i = θ0, w_f = level 0's final
             weights, at the experiment's rates and scope, so that it keeps as many
             weights per layer (per group, under global scope) as the parent's level.
             Written to untrained_mask.npz in the branch folder.
  learned    the same frozen weights, one real score per prunable weight (every score
             --supermask_score_init), trained as the paper's train_supermask.py does:
             each step draws the mask Bernoulli(sigmoid(score)) with a straight-through
             gradient through the sigmoid, --supermask_optimizer=momentum (the paper's
             'sgd' is momentum 0.9; --momentum sets it), --supermask_learning_rate=100,
             a constant learning rate, no weight decay, --supermask_iterations (0: the
             parent's --iterations), the parent's batch size and data order. The
             supermask is searched within the cell's mask: at level 0 that is the
             paper's experiment on the whole network; at a pruned level it asks how
             much of the ticket's support a learned supermask keeps. Masks are drawn
             at evaluation too, as the paper's code does. Models of Dense and Conv
             layers without BatchNorm only (training/supermask.py, the transformation).

The weights are the replicate's θ0 whatever the variant or --rewind_iteration (Zhou
et al.'s w_i); a variant only chooses the mask the learned supermask searches within.

Columns: `density` is the mask the weights are evaluated under (untrained) or searched
within (learned); `mask_density` the supermask's own density over all prunable weights
(learned: the expected one, mean sigmoid(score) within the cell's mask, the paper's
estimate). Learned rows' final_* numbers are the means over SAMPLES masks drawn from
the final scores (the paper's final test accuracy); threshold_test_accuracy is the
deterministic mask sigmoid(score) > 0.5; early_stop_* come from the run's one-draw
evaluations. iterations_spent: the dense run's iterations for untrained (its mask came
from it); the cell's mask cost plus the training for learned.
"""

import dataclasses
import json
import os
from typing import Dict, List, Tuple

import numpy as np

from tf_lottery import branches
from tf_lottery.branches.base import MEASURED, Branch, Cell
from tf_lottery.config import MASK_CRITERIA, ConfigError, option
from tf_lottery.experiment import files
from tf_lottery.lottery.plan import build_model
from tf_lottery.pruning import constraint, criteria, strategies
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training import checkpoints
from tf_lottery.training import supermask as supermask_lib
from tf_lottery.training.hooks import Hook
from tf_lottery.training.run import InitialWeights, RunSpec

KINDS = ("untrained", "learned")
OPTIMIZERS = ("momentum", "sgd", "adam")
SAMPLES = 10  # masks drawn from the final scores to measure a learned supermask (the paper's 10)
UNTRAINED_MASK = "untrained_mask.npz"  # in the branch folder
LEARNED_INIT = "learned_initial_weights.npz"  # in the branch folder: frozen weights and initial scores
COLUMNS = ("run", "mask_density", "final_test_accuracy", "final_validation_accuracy", "final_test_loss",
           "threshold_test_accuracy", "iterations_trained", "iterations_spent", "early_stop_iteration",
           "early_stop_test_accuracy", "best_val_accuracy", "train_seconds", "mask_weight_densities")


@dataclasses.dataclass(frozen=True)
class SupermaskOptions:
    supermask: Tuple[str, ...] = option(("untrained",), "Which supermasks, a part each: untrained (a criterion's "
                                        "mask on the untrained network) and/or learned (a trained mask over frozen "
                                        "weights).", choices=KINDS)
    supermask_criterion: str = option("large_final_same_sign", "The untrained supermask's mask criterion (w_i: θ0, "
                                      "w_f: level 0's final weights).", choices=MASK_CRITERIA)
    weights: str = option("init", "The frozen weights: init (θ0) or signed_constant (α·sign(θ0), α the standard "
                          "deviation of each prunable weight's θ0; other weights keep θ0).",
                          choices=supermask_lib.WEIGHTS)
    supermask_iterations: int = option(0, "Training iterations of a learned supermask (0: the parent's --iterations).")
    supermask_optimizer: str = option("momentum", "Optimizer of the scores (momentum: --momentum, 0.9 by default, "
                                      "as the paper's 'sgd').", choices=OPTIMIZERS)
    supermask_learning_rate: float = option(100.0, "Constant learning rate of the scores (the paper's 100, "
                                            "MNIST FC).")
    supermask_score_init: float = option(0.0, "Initial value of every score (the paper's sigmoid_bias; 0: p = 0.5).")
    dynamic_scaling: bool = option(False, "Learned: multiply each layer's masked weights by its size over the number "
                                   "of weights its drawn mask keeps.")

    def validate(self):
        unknown = [k for k in self.supermask if k not in KINDS]
        if unknown or not self.supermask or len(set(self.supermask)) != len(self.supermask):
            raise ConfigError(f"--supermask: expected some of {', '.join(KINDS)}, each once, "
                              f"got {','.join(self.supermask) or 'nothing'}")
        for name, value, known in (("supermask_criterion", self.supermask_criterion, MASK_CRITERIA),
                                   ("weights", self.weights, supermask_lib.WEIGHTS),
                                   ("supermask_optimizer", self.supermask_optimizer, OPTIMIZERS)):
            if value not in known:
                raise ConfigError(f"--{name}: expected one of {', '.join(known)}, got {value!r}")
        if self.supermask_iterations < 0:
            raise ConfigError(f"--supermask_iterations: must be >= 0 (0: the parent's), "
                              f"got {self.supermask_iterations}")
        if not self.supermask_learning_rate > 0:
            raise ConfigError(f"--supermask_learning_rate: must be > 0, got {self.supermask_learning_rate}")
        if not np.isfinite(self.supermask_score_init):
            raise ConfigError(f"--supermask_score_init: must be finite, got {self.supermask_score_init}")


class SupermaskRun(Hook):
    """Seeds a learned supermask's draws, logs its expected density at every evaluation and, at the
    end, measures it over SAMPLES drawn masks and the thresholded one (into result.json)."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_start(self, run, resumed):
        if not resumed:  # a resumed run's generator comes back with its checkpoint
            supermask_lib.state(run.trainer.forward_model).reset(self.seed)

    def on_evaluation(self, run, iteration, values):
        run.log.log(iteration, "mask", {"supermask_density": supermask_lib.mask_densities(run.model)[0]})

    def on_end(self, run, result):
        trainer, sets = run.trainer, run.bench.evaluation_sets(run.spec.config)
        drawn = {split: [trainer.evaluate(data) for _ in range(SAMPLES)] for split, data in sets.items()}
        switch = supermask_lib.state(trainer.forward_model).threshold
        switch.assign(True)
        thresholded = {split: trainer.evaluate(data) for split, data in sets.items()}
        switch.assign(False)
        density, by_weight = supermask_lib.mask_densities(run.model)
        for split, values in drawn.items():
            for metric in ("accuracy", "loss"):
                result[f"sampled_{split}_{metric}"] = float(np.mean([v[metric] for v in values]))
            result[f"threshold_{split}_accuracy"] = thresholded[split]["accuracy"]
        result.update(mask_density=density, mask_weight_densities=by_weight, supermask_samples=SAMPLES)


@branches.register
class Supermask(Branch):
    name = "supermask"
    description = ("masks that work without training the weights (Zhou et al. 2019): a criterion's mask on θ0, "
                   "or a mask learned over frozen weights")
    Options = SupermaskOptions
    columns = COLUMNS
    part_options = ("supermask",)

    def __init__(self, parent, options=None, overrides=None):
        super().__init__(parent, options, overrides)
        if "learned" in self.options.supermask and parent.dataset.input_shape:
            # Refused here, before the command writes anything, rather than when the run builds.
            supermask_lib.check_supported(build_model(self.config, parent.dataset))

    def parts(self, cell: Cell) -> List[Cell]:
        return [dataclasses.replace(cell, part=kind) for kind in self.options.supermask]

    def key(self, cell: Cell) -> str:
        return f"{cell.variant}_{cell.part}"

    # The learned supermask: an ordinary run ------------------------------------

    def learned_config(self):
        """The scores' settings: the paper's optimizer and constant learning rate, no weight decay
        (it would pull on the frozen weights' values too)."""
        o = self.options
        return self.config.replace(
            optimizer=o.supermask_optimizer, learning_rate=o.supermask_learning_rate, lr_values=(), lr_boundaries=(),
            warmup_iterations=0, weight_decay=0.0, iterations=o.supermask_iterations or self.config.training.iterations)

    def wrap(self):
        return supermask_lib.supermask_wrap(self.options.dynamic_scaling)

    def init_path(self, cell: Cell) -> str:
        return os.path.join(self.folder(cell).directory, LEARNED_INIT)

    def runs(self, cell: Cell) -> List[RunSpec]:
        if cell.part != "learned":
            return []  # the untrained supermask trains nothing: measure() evaluates it
        name = f"{cell.variant}_learned"
        return [RunSpec(directory=self.folder(cell).run(name).directory, config=self.learned_config(),
                        replicate=cell.replicate, level=cell.level, name=name,
                        masks=self.parent.masks(cell.replicate, cell.level, cell.variant),
                        init=InitialWeights.from_file(self.init_path(cell), "supermask_init"), start_iteration=0,
                        data_seed=self.config.data_seed(cell.replicate), model_wrap=self.wrap())]

    def prepare(self, cell: Cell, bench):
        """Writes the learned run's initial weights (frozen weights, then the scores) once: their
        order is that of the wrapped model, so it takes the trainer the run will use."""
        if cell.part != "learned":
            return
        path = self.init_path(cell)
        trainer = bench.trainer(self.learned_config(), self.wrap())
        if bench.is_chief and not os.path.exists(path):
            names, values = supermask_lib.initial_values(trainer.model, self.parent.theta_init(cell.replicate),
                                                         self.options.weights, self.options.supermask_score_init)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            files.write_weights(path, names, values)
        bench.barrier()

    def hooks(self, spec: RunSpec) -> List[Hook]:
        variant = spec.name[: -len("_learned")]
        return [SupermaskRun(self.cell_seed(Cell(spec.replicate, spec.level, variant), "supermask"))]

    # The untrained supermask: evaluated, not trained -------------------------------

    def untrained_mask(self, cell: Cell, model, initial, final) -> masks_lib.Masks:
        """The criterion's one-shot mask at the cell's level from the dense run (w_i θ0, w_f its final weights)."""
        rates = strategies.weight_rates(model, self.config.pruning)
        group_list = strategies.groups(rates, self.config.pruning.pruning_scope)
        return criteria.criterion_masks(self.options.supermask_criterion, initial, final,
                                        masks_lib.ones_like_model(model), group_list, cell.level,
                                        seed=self.cell_seed(cell, "supermask"))

    def evaluate_untrained(self, cell: Cell, bench) -> Tuple[masks_lib.Masks, Dict[str, dict]]:
        """(the mask, {split: loss and accuracy}) of the untrained network under the criterion's mask."""
        replicate, parent = cell.replicate, self.parent
        trainer = bench.trainer(self.config)  # the plain masked model; every run sets it afresh
        model, theta = trainer.model, parent.theta_init(replicate)
        checkpoints.assign_weights(model, parent.final_weights(replicate, 0, "imp"), source="level 0's final weights")
        final = masks_lib.prunable_values(model)
        checkpoints.assign_weights(model, theta, source="θ0")
        initial = masks_lib.prunable_values(model)
        masks = self.untrained_mask(cell, model, initial, final)
        frozen = supermask_lib.frozen_values(model, theta, self.options.weights)
        checkpoints.assign_weights(model, [frozen[id(v)] for v in constraint.model_weights(model)], source="θ0")
        masks_lib.apply_masks(model, masks)
        return masks, {split: trainer.evaluate(data) for split, data in bench.evaluation_sets(self.config).items()}

    # Measuring ---------------------------------------------------------------------

    def measure(self, cell: Cell, finished: Dict[str, dict], bench) -> List[dict]:
        if cell.part == "learned":
            return [self.learned_row(cell, finished[f"{cell.variant}_learned"])]
        masks, values = self.evaluate_untrained(cell, bench)
        if bench.is_chief:
            masks_lib.save(os.path.join(self.folder(cell).directory, UNTRAINED_MASK), masks)
        density = masks_lib.density(masks)
        return [{"run": "untrained", "density": density, "mask_density": density,
                 "final_test_accuracy": values["test"]["accuracy"], "final_test_loss": values["test"]["loss"],
                 "final_validation_accuracy": values.get("validation", {}).get("accuracy"),
                 "iterations_trained": 0, "iterations_spent": self.parent.iterations_spent(cell.replicate, 0, "imp"),
                 "mask_weight_densities": json.dumps(masks_lib.weight_densities(masks), sort_keys=True)}]

    def learned_row(self, cell: Cell, result: dict) -> dict:
        row = {"run": "learned", "density": result["density"], **{k: result.get(k) for k in MEASURED}}
        row.update(mask_density=result["mask_density"], final_test_accuracy=result["sampled_test_accuracy"],
                   final_test_loss=result["sampled_test_loss"],
                   final_validation_accuracy=result.get("sampled_validation_accuracy"),
                   threshold_test_accuracy=result["threshold_test_accuracy"],
                   iterations_spent=self.iterations_spent(cell, result),
                   mask_weight_densities=json.dumps(result["mask_weight_densities"], sort_keys=True))
        return row
