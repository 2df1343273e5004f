"""The IMP loop: for each replicate and level, the ticket's run and its controls, as RunSpecs.

Level 0 trains the dense network from θ0 (saving θk on the way when rewinding);
level L prunes the survivors of level L-1 (or, one-shot, of level 0) by magnitude
(or another --mask_criterion) and resets them to θ0 or θk, or with --retrain keeps
their trained values and replays the learning-rate schedule from k (lr_rewind) or
trains at its final rate (finetune). `--controls` schedules the reinit and random_prune
branches beside every pruned level, in the folders and results.csv rows they
always had. Every run checks for its result.json first and every file is written
once, atomically, so running the same experiment again resumes it.
"""

import dataclasses
import os
from typing import List, Optional

import tensorflow as tf

from tf_lottery import branches
from tf_lottery import flags as flags_lib
from tf_lottery.branches.base import Cell
from tf_lottery.config import ExperimentConfig
from tf_lottery.experiment import files
from tf_lottery.experiment.paths import ExperimentPaths
from tf_lottery.experiment.reader import Experiment, check_compatible
from tf_lottery.experiment.results import result_rows, write_results
from tf_lottery.lottery import early_bird
from tf_lottery.pruning import criteria, masks as masks_lib, strategies, structure
from tf_lottery.pruning.retraining import retraining_config
from tf_lottery.training import checkpoints
from tf_lottery.training.hooks import SaveWeightsAt
from tf_lottery.training.run import InitialWeights, RunSpec, train, train_group
from tf_lottery.training.workbench import Workbench, fresh_weights
from tf_lottery.utils import derive_seed, write_json, write_text


@dataclasses.dataclass
class Tally:
    """What one invocation did with the runs it visited: for the line a rerun prints."""

    finished: int = 0  # had their result.json already
    trained: int = 0  # trained (or resumed) by this invocation
    elsewhere: int = 0  # left to another process that holds them

    def add(self, was_finished: bool, result: Optional[dict]):
        if was_finished:
            self.finished += 1
        elif result is None:
            self.elsewhere += 1
        else:
            self.trained += 1

    def line(self) -> str:
        """'9 of 9 runs already finished; trained 0' or 'trained 4 runs, 9 already finished'."""
        total = self.finished + self.trained + self.elsewhere
        if not self.trained and not self.elsewhere:
            return f"{self.finished} of {total} run{'s' * (total != 1)} already finished; trained 0"
        text = f"trained {self.trained} run{'s' * (self.trained != 1)}, {self.finished} already finished"
        return text + (f", {self.elsewhere} left to another process training them" if self.elsewhere else "")


class ImpLoop:
    """Fills one experiment folder with the runs its config plans; `tally` counts what it did."""

    def __init__(self, config: ExperimentConfig, strategy: Optional[tf.distribute.Strategy] = None, stream=None):
        self.config = config
        self.strategy = strategy
        self.stream = stream
        self.paths = ExperimentPaths.of(config.run.output_dir, config.experiment_name)
        self.tally = Tally()

    def run(self) -> List[dict]:
        """Runs (or resumes) every chosen replicate; returns the rows of results.csv."""
        config = self.config
        check_compatible(self.paths, config)
        with Workbench(self.strategy, self.paths.root, self.stream) as bench:
            self.bench = bench
            bench.trainer(config)  # loads the data and checks the batch split before anything is written
            if bench.is_chief:
                self._write_experiment_files()
            chosen = range(config.run.replicates) if config.run.replicate < 0 else [config.run.replicate]
            width = bench.parallel_width(config)
            if width > 1:
                self._run_side_by_side(list(chosen), width)
            else:
                for replicate in chosen:
                    self._run_replicate(replicate)
            return write_results(self.paths) if bench.is_chief else result_rows(self.paths)

    def _write_experiment_files(self):
        os.makedirs(self.paths.root, exist_ok=True)
        write_text(self.paths.flags, "\n".join(flags_lib.flagfile_lines(self.config)) + "\n")
        write_json(self.paths.config, {"hashed": self.config.hashed_values(), "config": self.config.flat()})
        write_json(self.paths.dataset, dataclasses.asdict(self.bench.splits(self.config).info))
        if self.config.pruning.structured():
            # The unit groups, for the controls (random_prune) and results.csv's units_kept, which read no model.
            groups = structure.structure_groups(self.bench.trainer(self.config).model, self.config.pruning.pruning_structure)
            write_json(structure.structure_file(self.paths.root), {"structure": self.config.pruning.pruning_structure,
                                                                   "groups": structure.groups_to_json(groups)})

    def _write_theta_init(self, replicate: int):
        config, bench = self.config, self.bench
        theta_init = self.paths.theta_init(replicate)
        missing = not os.path.exists(theta_init)
        bench.barrier()  # every worker has looked before the chief writes
        if missing and bench.is_chief:  # θ0 is written once per replicate, never rewritten
            names, values = fresh_weights(config, bench.splits(config).info,
                                          derive_seed(config.run.seed + replicate, "init"))
            files.write_weights(theta_init, names, values)
        bench.barrier()  # and the chief has written before any worker reads

    def _run_replicate(self, replicate: int):
        config = self.config
        self._write_theta_init(replicate)
        parent = Experiment.open(self.paths.root)
        for level in range(config.pruning.levels + 1):
            self._train(self._ticket_spec(replicate, level), level, replicate)
            if level == 0:
                continue
            for control in config.pruning.controls:
                self._train(self._control_spec(parent, control, replicate, level), level, replicate,
                            wait=False)  # two processes on one replicate split its controls

    def _run_side_by_side(self, chosen: List[int], width: int):
        """Every chosen replicate, `width` runs at a time in lockstep (run.train_group): the tickets
        of level L train beside the controls of level L - 1, which need only the ticket of L - 1."""
        for replicate in chosen:
            self._write_theta_init(replicate)
        controls, levels = self.config.pruning.controls, self.config.pruning.levels
        parent = Experiment.open(self.paths.root)
        for level in range(levels + 2):
            runs = [(self._ticket_spec(r, level), level, r, True) for r in chosen] if level <= levels else []
            if 1 <= level - 1 and controls:
                runs += [(self._control_spec(parent, control, r, level - 1), level - 1, r, False)
                         for r in chosen for control in controls]
            for start in range(0, len(runs), width):
                chunk = runs[start:start + width]
                finished = [os.path.exists(spec.paths.result) for spec, *_ in chunk]
                results = train_group([spec for spec, *_ in chunk], self.bench,
                                      [self._hooks(spec, lvl, r) for spec, lvl, r, _ in chunk],
                                      wait=[w for *_, w in chunk])
                for was_finished, result in zip(finished, results):
                    self.tally.add(was_finished, result)
                if any(result is not None for result in results) and self.bench.is_chief:
                    write_results(self.paths)

    def _hooks(self, spec: RunSpec, level: int, replicate: int) -> list:
        rewind = self.config.pruning.rewind_iteration
        hooks = [SaveWeightsAt(rewind, self.paths.theta_rewind(replicate))] if level == 0 and rewind else []
        if self.config.pruning.early_bird and spec.name == "imp":
            hooks.append(self._early_bird(level))
        return hooks

    def _train(self, spec: RunSpec, level: int, replicate: int, wait: bool = True):
        was_finished = os.path.exists(spec.paths.result)
        result = train(spec, self.bench, self._hooks(spec, level, replicate), wait=wait)
        self.tally.add(was_finished, result)
        if result is not None and self.bench.is_chief:
            write_results(self.paths)

    def _early_bird(self, level: int) -> early_bird.EarlyBird:
        """The hook that ends level `level` once the mask of level `level` + 1 settles."""
        pruning, config = self.config.pruning, self.config

        def draw(model):
            return self._magnitude_masks(model, masks_lib.get_masks(model), level + 1)

        every = pruning.early_bird_every or early_bird.epoch_iterations(
            len(self.bench.splits(config).train_images), config.data.batch_size)
        # Level 0 may not end before θk is saved.
        earliest = pruning.rewind_iteration if level == 0 else 0
        distance = early_bird.mask_distance
        if pruning.pruning_structure == "channels":  # the paper's form: distances between channel masks
            distance = early_bird.unit_distance(structure.structure_groups(self.bench.trainer(config).model, "channels"))
        return early_bird.EarlyBird(draw, every, pruning.early_bird_window, pruning.early_bird_threshold, earliest,
                                    distance=distance)

    def _ticket_spec(self, replicate: int, level: int) -> RunSpec:
        config, rewind = self.config, self.config.pruning.rewind_iteration
        paths = self.paths.run(replicate, level, "imp")
        if level > 0 and config.pruning.retrain != "reset":
            # The survivors keep the weights the mask was computed from (Renda et al.'s rewinding of the
            # learning rate only, and fine-tuning).
            init = InitialWeights.from_file(self._mask_source(replicate, level).final_weights, "previous_final")
        elif level > 0 and rewind:
            theta_k = self.paths.theta_rewind(replicate)
            if not os.path.exists(theta_k):
                raise checkpoints.CheckpointError(f"{theta_k} is missing although level 0 finished; delete level_00 to redo it")
            init = InitialWeights.from_file(theta_k, "theta_rewind")
        else:
            init = InitialWeights.from_file(self.paths.theta_init(replicate), "theta_0")
        return RunSpec(directory=paths.directory, config=retraining_config(config, level), replicate=replicate,
                       level=level, name="imp", masks=self._ticket_masks(replicate, level), init=init,
                       start_iteration=rewind if level > 0 else 0, data_seed=config.data_seed(replicate))

    def _mask_source(self, replicate: int, level: int):
        """The run whose final weights level `level`'s mask is computed from."""
        return self.paths.run(replicate, 0 if self.config.pruning.prune_mode == "oneshot" else level - 1, "imp")

    def _ticket_masks(self, replicate: int, level: int) -> masks_lib.Masks:
        """IMP's mask at `level`: level 0 is dense; later levels prune by --mask_criterion."""
        model = self.bench.trainer(self.config).model
        if level == 0:
            return masks_lib.ones_like_model(model)
        mask_path = self.paths.run(replicate, level, "imp").mask
        if os.path.exists(mask_path):
            return masks_lib.load(mask_path)
        pruning = self.config.pruning
        source = self._mask_source(replicate, level)
        current = masks_lib.ones_like_model(model) if pruning.prune_mode == "oneshot" else masks_lib.load(source.mask)
        if pruning.mask_criterion == "large_final":
            checkpoints.load_weights(model, source.final_weights)
            return self._magnitude_masks(model, current, level)
        initial = None
        if criteria.needs_initial(pruning.mask_criterion):
            checkpoints.load_weights(model, self._start_weights(replicate, 0 if pruning.prune_mode == "oneshot" else level - 1))
            initial = masks_lib.prunable_values(model)
        checkpoints.load_weights(model, source.final_weights)
        groups = strategies.groups(strategies.weight_rates(model, pruning), pruning.pruning_scope)
        return criteria.criterion_masks(pruning.mask_criterion, initial, masks_lib.prunable_values(model), current,
                                        groups, level, seed=derive_seed(self.config.run.seed + replicate, "mask", level))

    def _start_weights(self, replicate: int, level: int) -> str:
        """w_i of the mask criteria for a mask computed from level `level`'s imp run: the weights
        that run started from, where the dense level counts θk when rewinding (where every
        later level starts)."""
        if level == 0:
            rewind = self.config.pruning.rewind_iteration
            return self.paths.theta_rewind(replicate) if rewind else self.paths.theta_init(replicate)
        path, _, _ = Experiment.open(self.paths.root).start_of(replicate, level, "imp")
        return path

    def _magnitude_masks(self, model, current: masks_lib.Masks, level: int) -> masks_lib.Masks:
        """Level `level`'s mask from the model's current weights and the surviving `current` (IMP's
        rule, which Early-Bird's draws follow too), in --pruning_structure's unit."""
        return strategies.level_masks(model, current, self.config.pruning, level)

    def _control_spec(self, parent: Experiment, control: str, replicate: int, level: int) -> RunSpec:
        """The control branch's run of the ticket at `level`, in the loop's own folder for it."""
        # This invocation's settings (progress, data_dir, ...): the hashed ones equal the stored ones.
        [spec] = branches.get(control)(parent, overrides=self.config.flat()).runs(Cell(replicate, level, "imp"))
        return dataclasses.replace(spec, name=control, directory=self.paths.run(replicate, level, control).directory)


def run_experiment(config: ExperimentConfig, strategy=None, stream=None) -> List[dict]:
    """Runs or resumes the experiment `config` describes; returns results.csv's rows."""
    return ImpLoop(config, strategy, stream).run()
