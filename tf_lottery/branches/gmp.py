"""gmp: gradual magnitude pruning (Zhu & Gupta 2017) by tensorflow-model-optimization, the baseline.

"To prune, or not to prune": is a winning ticket better than the network the
standard pruning method produces at the same size? For each chosen pruned level
of the parent, one run prunes gradually, with tfmot's own `prune_low_magnitude`,
`PolynomialDecay` (initial sparsity 0, power 3) and `strip_pruning`, to exactly the
per-layer densities of the parent's mask at that level (each pruned layer its own
final sparsity, the output layer too), trained by the project's own loop:

  --start=trained  (default) level 0's trained dense weights, pruned while fine-tuning
                   at the schedule's final learning rate: train, prune, fine-tune;
  --start=init     the replicate's θ0, pruned while training with the experiment's
                   schedule, from iteration 0.

Each run trains --gmp_iterations (0: the parent's --iterations). tfmot updates the
masks every --gmp_frequency steps from --gmp_begin to --gmp_end (0: 3/4 of the run,
rounded down to gmp_begin + a multiple of gmp_frequency, so that the last update,
at gmp_end, reaches the target); after it the masks stay fixed. At the end the
pruned weights are zeroed, the model stripped, and the stripped weights' zeros
become the run's masks: result.json's densities, final_weights.npz and any export
are the pruned network's. `iterations_spent` counts what the network cost: with
start=trained the dense run's too.
"""

import dataclasses
import json
import logging
from typing import Dict, List, Mapping, Tuple

import numpy as np

from tf_lottery import branches
from tf_lottery.branches.base import MEASURED, Branch, Cell
from tf_lottery.config import ConfigError, option
from tf_lottery.errors import UsageError
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.pruning.retraining import final_learning_rate
from tf_lottery.training.hooks import Hook
from tf_lottery.training.loop import ModelWrap
from tf_lottery.training.run import InitialWeights, RunSpec

STARTS = ("trained", "init")
END_FRACTION = 0.75  # gmp_end's default, as a fraction of the run
OWN_COLUMNS = ("run", "target_density", "iterations_spent", "iterations_trained", "pruning_end", "weight_densities")
COLUMNS = OWN_COLUMNS + tuple(c for c in MEASURED if c not in OWN_COLUMNS)


@dataclasses.dataclass(frozen=True)
class GmpOptions:
    start: str = option("trained", "Where the pruned run starts: trained (level 0's final weights, pruned while "
                        "fine-tuning at the schedule's final learning rate) or init (θ0, pruned while training "
                        "with the experiment's schedule).", choices=STARTS)
    gmp_iterations: int = option(0, "Iterations of each gmp run (0: the parent's --iterations).")
    gmp_begin: int = option(0, "Step of the run at which tfmot's pruning begins.")
    gmp_end: int = option(0, "Step of the run at which tfmot's pruning reaches the target (0: 3/4 of the run, "
                          "rounded down to gmp_begin + a multiple of gmp_frequency).")
    gmp_frequency: int = option(100, "tfmot updates the masks every this many steps.")

    def validate(self):
        for name in ("gmp_iterations", "gmp_begin", "gmp_end"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name}: must be >= 0, got {getattr(self, name)}")
        if self.gmp_frequency < 1:
            raise ConfigError(f"--gmp_frequency: must be >= 1, got {self.gmp_frequency}")
        if self.start not in STARTS:
            raise ConfigError(f"--start: expected one of {', '.join(STARTS)}, got {self.start!r}")
        if self.gmp_end and self.gmp_end <= self.gmp_begin:
            raise ConfigError(f"--gmp_end: must be after --gmp_begin={self.gmp_begin}, got {self.gmp_end}")
        if self.gmp_end and (self.gmp_end - self.gmp_begin) % self.gmp_frequency:
            raise ConfigError(f"--gmp_end: must be --gmp_begin plus a multiple of --gmp_frequency="
                              f"{self.gmp_frequency}, so that the last mask update reaches the target; "
                              f"got {self.gmp_end}")


# tfmot --------------------------------------------------------------------------


def final_sparsity(path: str, size: int, kept: int) -> float:
    """The PolynomialDecay final_sparsity at which tfmot keeps exactly `kept` of `size` weights.

    tfmot keeps max(1, round(float32(size) * (1 - float32(sparsity)))), rounded half
    to even in float32; this checks that the value lands on `kept`.
    """
    if not 0 < kept <= size:
        raise UsageError(f"branch gmp: {path} keeps {kept} of {size} weights; tfmot keeps between 1 and all")
    sparsity = 1.0 - kept / size
    reached = max(1, int(np.round(np.float32(size) * (np.float32(1.0) - np.float32(sparsity)))))
    if reached != kept:  # pragma: no cover (float32 holds every count below 2**24 within 0.5)
        raise UsageError(f"branch gmp: tfmot cannot keep exactly {kept} of the {size} weights of {path} "
                         f"(float32 rounding gives {reached})")
    return sparsity


def _wrappers(forward) -> List:
    """tfmot's pruning wrappers in a forward model (nested models included)."""
    from tensorflow_model_optimization.python.core.sparsity.keras import \
        pruning_wrapper  # pylint: disable=import-outside-toplevel

    found = []
    for layer in forward.layers:
        if isinstance(layer, pruning_wrapper.PruneLowMagnitude):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(_wrappers(layer))
    return found


def gmp_wrap(sparsities: Mapping[str, float], begin: int, end: int, frequency: int) -> ModelWrap:
    """The ModelWrap that trains a masked model through tfmot's prune_low_magnitude: each weight
    path of `sparsities` ('fc1/kernel': final sparsity) its layer's own PolynomialDecay."""
    key = ("gmp", begin, end, frequency, tuple(sorted((p, float(s)) for p, s in sparsities.items())))

    def build(model):
        import tensorflow_model_optimization as tfmot  # pylint: disable=import-outside-toplevel
        import tf_keras as keras  # pylint: disable=import-outside-toplevel

        from tf_lottery.pruning import prunable  # pylint: disable=import-outside-toplevel

        by_layer = {}
        for weight in prunable.prunable_weights(model):
            if weight.path in sparsities:
                by_layer.setdefault(weight.layer.name, []).append(weight)

        def clone(layer):
            if isinstance(layer, keras.Model):
                return keras.models.clone_model(layer, clone_function=clone)
            weights = by_layer.get(layer.name)
            if not weights:
                return layer
            schedule = tfmot.sparsity.keras.PolynomialDecay(
                initial_sparsity=0.0, final_sparsity=sparsities[weights[0].path], begin_step=begin, end_step=end,
                power=3, frequency=frequency)
            try:
                wrapped = tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
            except ValueError:
                raise UsageError(f"branch gmp: tfmot cannot prune layer {layer.name} "
                                 f"({type(layer).__name__})") from None
            pruned = wrapped.layer.get_prunable_weights()
            if len(weights) != 1 or [id(v) for v in pruned] != [id(weights[0].variable)]:
                raise UsageError(f"branch gmp: tfmot prunes {', '.join(v.name for v in pruned)} of layer "
                                 f"{layer.name} under one schedule, tf_lottery {', '.join(w.path for w in weights)}; "
                                 "gmp takes layers with one prunable weight (Dense, Conv)")
            return wrapped

        forward = keras.models.clone_model(model, clone_function=clone)
        if len(_wrappers(forward)) != len(by_layer):
            raise UsageError(f"branch gmp: model {model.name} nests layers tfmot's clone does not reach")
        return forward

    def reset(forward):
        """What tfmot's UpdatePruningStep.on_train_begin does, and masks whole again."""
        for wrapper in _wrappers(forward):
            wrapper.pruning_step.assign(0)
            for _, mask, threshold in wrapper.pruning_vars:
                mask.assign(np.ones(mask.shape, mask.dtype.as_numpy_dtype))
                threshold.assign(np.zeros(threshold.shape, threshold.dtype.as_numpy_dtype))

    return ModelWrap(key=key, build=build, reset=reset)


def tfmot_masks(run) -> Dict[str, np.ndarray]:
    """The run's masks as tfmot holds them now: its mask for a wrapped weight, the model's otherwise."""
    current = masks_lib.get_masks(run.model)
    by_variable = {id(weight): mask for wrapper in _wrappers(run.trainer.forward_model)
                   for weight, mask, _ in wrapper.pruning_vars}
    from tf_lottery.pruning import prunable  # pylint: disable=import-outside-toplevel

    for weight in prunable.prunable_weights(run.model):
        if id(weight.variable) in by_variable:
            current[weight.path] = by_variable[id(weight.variable)].numpy().astype(np.float32)
    return current


class GradualPruning(Hook):
    """Logs tfmot's densities at its mask updates and, at the run's last step, folds its pruning
    into the model: pruned weights zeroed (tfmot's weight_mask_op, which its UpdatePruningStep
    callback runs at each epoch's end), the model stripped, the stripped weights' zeros its masks."""

    def __init__(self, begin: int, end: int, frequency: int, targets: Mapping[str, np.ndarray]):
        self.begin, self.end, self.frequency = begin, end, frequency
        self.targets = targets  # the parent's masks: what the run must reach

    def next_stop(self, iteration):
        return self.begin + max(0, (iteration - self.begin) // self.frequency + 1) * self.frequency \
            if iteration < self.end else None

    def at_stop(self, run, iteration):
        step = iteration - run.spec.start_iteration
        if iteration == run.spec.end_iteration:
            self.fold(run)
        if step == run.spec.end_iteration - run.spec.start_iteration or (
                self.begin <= step <= self.end and (step - self.begin) % self.frequency == 0):
            masks = tfmot_masks(run)
            values = {"density": masks_lib.density(masks)}
            values.update({f"density/{p}": d for p, d in masks_lib.weight_densities(masks).items()})
            run.log.log(iteration, "mask", values)

    def fold(self, run):
        import tensorflow_model_optimization as tfmot  # pylint: disable=import-outside-toplevel

        from tf_lottery.pruning import prunable  # pylint: disable=import-outside-toplevel

        forward = run.trainer.forward_model
        with run.bench.strategy.scope():
            for wrapper in _wrappers(forward):
                wrapper.pruning_obj.weight_mask_op()
        stripped = tfmot.sparsity.keras.strip_pruning(forward)
        held = tfmot_masks(run)
        folded = masks_lib.get_masks(run.model)
        for weight in prunable.prunable_weights(run.model):
            if weight.path not in self.targets or np.all(self.targets[weight.path]):
                continue  # not wrapped: its mask stays
            variable = getattr(stripped.get_layer(weight.layer.name), weight.attribute)
            folded[weight.path] = (variable.numpy() != 0).astype(np.float32)
            if not np.array_equal(folded[weight.path], held[weight.path]):
                logging.getLogger("tf_lottery").warning(
                    "gmp: %s: %d weights kept by tfmot's mask are exactly 0 (pruned with it)",
                    weight.path, int(np.sum(held[weight.path])) - int(np.sum(folded[weight.path])))
            kept, target = int(np.sum(folded[weight.path])), int(np.sum(self.targets[weight.path]))
            if kept != target:  # tfmot keeps every weight tied with its threshold
                logging.getLogger("tf_lottery").warning("gmp: tfmot kept %d weights of %s, the target is %d",
                                                        kept, weight.path, target)
        masks_lib.apply_masks(run.model, folded)

    def on_end(self, run, result):
        result["target_density"] = masks_lib.density(self.targets)
        result["target_weight_densities"] = masks_lib.weight_densities(self.targets)
        result["pruning_end"] = self.end


# The branch -----------------------------------------------------------------------


@branches.register
class Gmp(Branch):
    name = "gmp"
    description = "gradual magnitude pruning by tfmot (Zhu & Gupta 2017) to the parent's per-layer densities"
    Options = GmpOptions
    columns = COLUMNS
    pruned_levels_only = True

    def __init__(self, parent, options=None, overrides=None):
        super().__init__(parent, options, overrides)
        self.iterations = self.options.gmp_iterations or self.config.training.iterations
        self.begin, self.end = self.options.gmp_begin, self.schedule_end()

    def schedule_end(self) -> int:
        begin, frequency, iterations = self.options.gmp_begin, self.options.gmp_frequency, self.iterations
        end = self.options.gmp_end or begin + int(END_FRACTION * iterations - begin) // frequency * frequency
        if end <= begin:
            raise ConfigError(f"--gmp_frequency: {frequency} leaves no mask update between --gmp_begin={begin} and "
                              f"3/4 of the {iterations}-iteration run; lower it or set --gmp_end")
        if end > iterations:
            raise ConfigError(f"--gmp_end: {end} is past the run's end ({iterations} iterations), so tfmot "
                              "would never reach the target")
        return end

    def run_config(self):
        """The runs' settings: start=trained fine-tunes at the schedule's final learning rate."""
        config = self.config
        if self.options.start == "trained":
            config = config.replace(learning_rate=final_learning_rate(config), lr_values=(), lr_boundaries=(),
                                    warmup_iterations=0)
        return config.replace(iterations=self.iterations) if self.iterations != config.training.iterations else config

    def start_weights(self, cell: Cell) -> InitialWeights:
        if self.options.start == "trained":
            self.parent.require_finished(cell.replicate, 0, "imp")
            return InitialWeights.from_file(self.parent.run(cell.replicate, 0, "imp").final_weights,
                                            "level_0_final_weights")
        return self.dense_start(cell.replicate, 0)

    def targets(self, cell: Cell) -> Tuple[Dict[str, np.ndarray], Dict[str, float]]:
        """The parent's masks of the cell, and the final sparsity of each weight tfmot prunes."""
        masks = self.parent.masks(cell.replicate, cell.level, cell.variant)
        sparsities = {path: final_sparsity(path, mask.size, int(np.count_nonzero(mask)))
                      for path, mask in masks.items() if not np.all(mask)}
        return masks, sparsities

    def runs(self, cell: Cell):
        masks, sparsities = self.targets(cell)
        frequency = self.options.gmp_frequency
        return [RunSpec(directory=self.folder(cell).run(cell.variant).directory, config=self.run_config(),
                        replicate=cell.replicate, level=cell.level, name=cell.variant,
                        masks={path: np.ones_like(mask) for path, mask in masks.items()}, init=self.start_weights(cell),
                        start_iteration=0, data_seed=self.config.data_seed(cell.replicate),
                        model_wrap=gmp_wrap(sparsities, self.begin, self.end, frequency))]

    def hooks(self, spec: RunSpec):
        masks = self.parent.masks(spec.replicate, spec.level, spec.name)
        return [GradualPruning(self.begin, self.end, self.options.gmp_frequency, masks)]

    def measure(self, cell: Cell, finished: Dict[str, dict], bench) -> List[dict]:
        del bench
        rows = []
        for name, result in finished.items():
            spent = result["iterations_trained"]
            if self.options.start == "trained":
                spent += self.parent.iterations_spent(cell.replicate, 0, "imp")
            rows.append({"run": name, "density": result["density"], "target_density": result["target_density"],
                         "iterations_spent": spent, "iterations_trained": result["iterations_trained"],
                         "pruning_end": result["pruning_end"],
                         "weight_densities": json.dumps(result["weight_densities"], sort_keys=True),
                         **{k: result.get(k) for k in MEASURED}})
        return rows
