"""Runs an IMP experiment: for each replicate, level and variant, one training run.

Every run checks for its result.json before doing anything, and every file is
written once and atomically, so running the same experiment again resumes it:
finished runs are skipped, an interrupted run continues from its last checkpoint.
"""

import dataclasses
import os
import shutil
import time
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from tf_lottery import data, distribute, models
from tf_lottery import flags as flags_lib
from tf_lottery.config import ConfigError, ExperimentConfig
from tf_lottery.data import augment as augment_lib
from tf_lottery.data import pipeline
from tf_lottery.lottery import plan as plan_lib
from tf_lottery.lottery.paths import ExperimentPaths, RunPaths
from tf_lottery.lottery.results import result_rows, write_results
from tf_lottery.pruning import constraint, masks as masks_lib, strategies
from tf_lottery.training import checkpoints, progress, summaries
from tf_lottery.training.loop import Trainer
from tf_lottery.utils import derive_seed, exclusive_lock, read_json, write_json, write_text

MAX_STEPS_PER_CALL = 500  # bounds the time between progress updates


class DivergenceError(RuntimeError):
    """Training loss became NaN or infinite; the message is one line."""


def check_compatible(paths: ExperimentPaths, config: ExperimentConfig):
    """Refuses to mix two different experiments in one folder (reads only)."""
    if not os.path.exists(paths.config):
        return
    stored = read_json(paths.config).get("hashed", {})
    current = config.hashed_values()
    if stored != current:
        differing = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise ConfigError(
            f"--experiment_name: {paths.root} holds an experiment with other settings "
            f"(differs in {', '.join('--' + k for k in differing)}); choose another --experiment_name"
        )


class Experiment:
    """One experiment directory and the runs that fill it."""

    def __init__(self, config: ExperimentConfig, strategy: Optional[tf.distribute.Strategy] = None, stream=None):
        self.config = config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.paths = ExperimentPaths.of(config.run.output_dir, config.experiment_name)
        self.stream = stream
        self.files = None  # set by run(): where this process writes (the chief: the experiment itself)
        replicas = self.strategy.num_replicas_in_sync
        if config.data.batch_size % replicas:
            raise ConfigError(f"--batch_size: {config.data.batch_size} is not divisible by the {replicas} replicas")

    # Experiment ---------------------------------------------------------------

    def run(self) -> List[dict]:
        """Runs (or resumes) every replicate; returns the rows of results.csv."""
        config = self.config
        check_compatible(self.paths, config)
        splits = data.load(config.data.dataset, config.data.data_dir, config.data.validation_size, config.data.download)
        self.files = distribute.ScratchDirectory(self.strategy, self.paths.root)
        try:
            return self._run(splits)
        finally:
            self.files.close()

    def _run(self, splits: data.Splits) -> List[dict]:
        config = self.config
        if self.files.is_chief:
            self._write_experiment_files(splits.info)
        self.splits = splits
        self._eval_sets = {
            split: self.strategy.experimental_distribute_dataset(
                pipeline.evaluation_dataset(images, labels, splits.info, config.data.eval_batch_size))
            for split, images, labels in (
                ("validation", splits.validation_images, splits.validation_labels),
                ("test", splits.test_images, splits.test_labels),
            ) if len(images)
        }
        chosen = range(config.run.replicates) if config.run.replicate < 0 else [config.run.replicate]
        for replicate in chosen:
            self._run_replicate(replicate)
        return write_results(self.paths) if self.files.is_chief else result_rows(self.paths)

    def _write_experiment_files(self, info: data.DatasetInfo):
        os.makedirs(self.paths.root, exist_ok=True)
        write_text(self.paths.flags, "\n".join(flags_lib.flagfile_lines(self.config)) + "\n")
        write_json(self.paths.config, {"hashed": self.config.hashed_values(), "config": self.config.flat()})
        write_json(self.paths.dataset, dataclasses.asdict(info))

    # Replicate ----------------------------------------------------------------

    def _run_replicate(self, replicate: int):
        config, info = self.config, self.splits.info
        self.replicate, self.seed = replicate, config.run.seed + replicate
        with self.strategy.scope(), distribute.precision_policy(config.run.mixed_precision):
            self.model = models.build(config.model.model, info.input_shape, info.num_classes,
                                      seed=derive_seed(self.seed, "init"), **plan_lib.model_options(config))
            self.trainer = Trainer(self.strategy, self.model, config.training, config.data.batch_size,
                                   mixed_precision=config.run.mixed_precision)
        self.groups = strategies.groups(strategies.layer_rates(self.model, config.pruning), config.pruning.pruning_scope)
        theta_init = self.paths.theta_init(replicate)
        missing = not os.path.exists(theta_init)
        distribute.barrier(self.strategy)  # every worker has looked before the chief writes
        if missing:  # θ0 is written once per replicate, never rewritten
            checkpoints.save_weights(self.model, self.files.writable(theta_init))
        distribute.barrier(self.strategy)  # and the chief has written before any worker reads
        self.theta_init = checkpoints.read_weights(theta_init)
        rewind = config.pruning.rewind_iteration
        for level in range(config.pruning.levels + 1):
            ticket_masks = self._ticket_masks(level)
            start = rewind if level > 0 else 0
            rewind_weights = self._rewind_weights() if level > 0 else self.theta_init
            self._train_run(level, "imp", ticket_masks, rewind_weights, start)
            if level == 0:
                continue
            if "reinit" in config.pruning.controls:
                fresh = self._fresh_weights(level)
                self._train_run(level, "reinit", ticket_masks, fresh, start)
            if "random_prune" in config.pruning.controls:
                random = strategies.random_masks(ticket_masks, derive_seed(self.seed, "random_prune", level))
                self._train_run(level, "random_prune", random, rewind_weights, start)

    def _rewind_weights(self) -> List[np.ndarray]:
        if self.config.pruning.rewind_iteration == 0:
            return self.theta_init
        path = self.paths.theta_rewind(self.replicate)
        if not os.path.exists(path):
            raise checkpoints.CheckpointError(f"{path} is missing although level 0 finished; delete level_00 to redo it")
        return checkpoints.read_weights(path)

    def _fresh_weights(self, level: int) -> List[np.ndarray]:
        """A new random initialisation of the same architecture (the reinit control)."""
        info = self.splits.info
        # Built outside the strategy scope: only its values are needed, copied by position.
        fresh = models.build(self.config.model.model, info.input_shape, info.num_classes,
                             seed=derive_seed(self.seed, "reinit", level), **plan_lib.model_options(self.config))
        return [v.numpy() for v in constraint.model_weights(fresh)]

    def _ticket_masks(self, level: int) -> masks_lib.Masks:
        """IMP's mask at `level`: level 0 is dense; later levels prune by magnitude."""
        if level == 0:
            return masks_lib.ones_like_model(self.model)
        mask_path = self.paths.run(self.replicate, level, "imp").mask
        if os.path.exists(mask_path):
            return masks_lib.load(mask_path)
        oneshot = self.config.pruning.prune_mode == "oneshot"
        source = self.paths.run(self.replicate, 0 if oneshot else level - 1, "imp")
        checkpoints.load_weights(self.model, source.final_weights)
        current = masks_lib.ones_like_model(self.model) if oneshot else masks_lib.load(source.mask)
        return strategies.magnitude_masks(masks_lib.get_kernels(self.model), current, self.groups, level)

    # Run ----------------------------------------------------------------------

    def _train_run(self, level: int, variant: str, run_masks, initial_weights, start: int):
        paths = self.paths.run(self.replicate, level, variant)
        if os.path.exists(paths.result):
            return read_json(paths.result)
        if distribute.is_multi_worker(self.strategy):  # the workers train each run together
            return self._train_locked_run(paths, level, variant, run_masks, initial_weights, start)
        # Processes sharing an experiment never train one run twice at once. A ticket run
        # is waited for (the next level is pruned from it); a control another process is
        # training is left to it, so two processes on one replicate split its controls.
        with exclusive_lock(os.path.join(paths.directory, "run.lock"), wait=variant == "imp") as held:
            if not held:
                progress.announce(self.config.run.progress, f"replicate {self.replicate} level {level} {variant}: "
                                  "another process is training it", self.stream)
                return None
            if os.path.exists(paths.result):
                return read_json(paths.result)
            return self._train_locked_run(paths, level, variant, run_masks, initial_weights, start)

    def _train_locked_run(self, paths: RunPaths, level: int, variant: str, run_masks, initial_weights, start: int):
        config, trainer = self.config, self.trainer
        if os.path.exists(paths.mask):
            run_masks = masks_lib.load(paths.mask)
        elif self.files.is_chief:
            masks_lib.save(paths.mask, run_masks)
        checkpoints.assign_weights(self.model, initial_weights, source="initial weights")
        masks_lib.apply_masks(self.model, run_masks)
        trainer.reset(start)
        chief = self.files.is_chief
        # Every worker restores the chief's checkpoint and takes part in each save
        # (reading synchronised variables may be a collective); other workers' copies go to scratch.
        checkpoint = checkpoints.RunCheckpoint(paths.checkpoints, trainer, write_directory=self.files.writable(paths.checkpoints))
        resumed = checkpoint.restore()
        iteration = int(trainer.iteration.numpy())
        log = summaries.MetricsLog(self.files.writable(paths.metrics), paths.directory if chief else None,
                                   resume_iteration=iteration if resumed else None)
        description = f"replicate {self.replicate} level {level} {variant}"
        bar = progress.RunProgress(config.run.progress and chief, description, iteration, config.training.iterations)
        started = time.time()
        try:
            if not resumed:
                self._log_masks(log, start, run_masks)
                self._evaluate(log, start)
            self._train_until_done(paths, level, variant, iteration, log, checkpoint, bar)
        finally:
            bar.close()
            log.close()
        checkpoints.save_weights(self.model, self.files.writable(paths.final_weights))
        result = None
        if chief:
            result = self._result(level, variant, run_masks, paths, time.time() - started)
            write_json(paths.result, result)
            shutil.rmtree(paths.checkpoints, ignore_errors=True)
            write_results(self.paths)
            progress.announce(
                config.run.progress,
                f"{description}: density {result['density']:.2%} final test accuracy {result['final_test_accuracy']:.4f} "
                f"early stop {result['early_stop_test_accuracy']:.4f} at iteration {result['early_stop_iteration']}",
                self.stream,
            )
        else:
            shutil.rmtree(self.files.writable(paths.checkpoints), ignore_errors=True)
        distribute.barrier(self.strategy)  # the next level reads this run's final weights and mask
        return result

    def _train_until_done(self, paths: RunPaths, level, variant, iteration, log, checkpoint, bar):
        config, trainer = self.config, self.trainer
        total, eval_every, save_every = config.training.iterations, config.training.eval_every, config.training.checkpoint_every
        rewind = config.pruning.rewind_iteration
        saves_rewind = level == 0 and rewind > 0
        # Decided before this run writes anything, so that every worker decides alike.
        rewind_missing = saves_rewind and not os.path.exists(self.paths.theta_rewind(self.replicate))
        iterator = iter(self.strategy.distribute_datasets_from_function(self._training_input(iteration)))
        while iteration < total:
            stops = [total, iteration + MAX_STEPS_PER_CALL,
                     (iteration // eval_every + 1) * eval_every, (iteration // save_every + 1) * save_every]
            if saves_rewind and iteration < rewind:
                stops.append(rewind)
            target = min(stops)
            trainer.train(iterator, target - iteration)
            iteration = target
            if saves_rewind and iteration == rewind and rewind_missing:
                checkpoints.save_weights(self.model, self.files.writable(self.paths.theta_rewind(self.replicate)))
            train = trainer.train_metrics()
            evaluated = iteration % eval_every == 0 or iteration == total
            if evaluated:
                if not np.isfinite(train["loss"]):
                    raise DivergenceError(
                        f"replicate {self.replicate} level {level} {variant} diverged by iteration {iteration} "
                        f"(training loss {train['loss']}); lower --learning_rate or add --warmup_iterations"
                    )
                log.log(iteration, "train", {**train, "learning_rate": trainer.learning_rate()})
                trainer.reset_train_metrics()
                self._evaluate(log, iteration)
            if iteration % save_every == 0 and iteration < total:
                checkpoint.save(iteration)
            bar.update(iteration, train["loss"], train["accuracy"], evaluated)

    def _training_input(self, start_iteration: int):
        config, splits = self.config, self.splits
        augment_mode = config.data.augment
        augment = augment_mode == "on" or (augment_mode == "auto" and models.spec(config.model.model).augment)
        seed = derive_seed(self.seed, "data")

        def dataset_fn(context: tf.distribute.InputContext):
            return pipeline.training_dataset(
                splits.train_images, splits.train_labels, splits.info,
                batch_size=context.get_per_replica_batch_size(config.data.batch_size), seed=seed,
                start_iteration=start_iteration, augment=augment_lib.pad_crop_flip if augment else None,
                batches_per_step=context.num_replicas_in_sync // context.num_input_pipelines,
                num_shards=context.num_input_pipelines, shard_index=context.input_pipeline_id,
            )

        return dataset_fn

    def _evaluate(self, log: summaries.MetricsLog, iteration: int):
        for split, dataset in self._eval_sets.items():
            log.log(iteration, split, self.trainer.evaluate(dataset))

    def _log_masks(self, log, iteration, run_masks):
        values = {"density": masks_lib.density(run_masks)}
        values.update({f"density/{name}": d for name, d in masks_lib.layer_densities(run_masks).items()})
        log.log(iteration, "mask", values)

    def _result(self, level, variant, run_masks, paths: RunPaths, seconds: float) -> Dict:
        summary = summaries.summarize(summaries.read_metrics(paths.metrics))
        counts = masks_lib.counts(run_masks)
        return {
            "replicate": self.replicate, "level": level, "variant": variant,
            "density": masks_lib.density(run_masks),
            "remaining_weights": sum(counts.values()),
            "total_weights": sum(m.size for m in run_masks.values()),
            "layer_densities": masks_lib.layer_densities(run_masks),
            "train_seconds": round(seconds, 2),
            **summary,
        }


def run_experiment(config: ExperimentConfig, strategy=None, stream=None) -> List[dict]:
    """Runs or resumes the experiment `config` describes; returns results.csv's rows."""
    return Experiment(config, strategy, stream).run()
