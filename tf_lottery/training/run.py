"""A run as a value, and the one function that trains any run into its folder.

A RunSpec says everything that makes a run what it is: its masks, where its initial
weights come from, the iteration it starts at, its data order and its settings.
`train(spec, workbench)` does everything runs share: the per-run lock, resuming
from the last checkpoint (kill -9 safe), metrics.csv, TensorBoard, result.json,
progress and the multi-worker chief rules. The IMP loop and every branch only
decide which specs to train; what else a run must do while it trains (save θk,
prune gradually, snapshot masks) is a Hook.
"""

import contextlib
import dataclasses
import math
import os
import shutil
import time
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from tf_lottery import distribute, models, tasks
from tf_lottery.config import ExperimentConfig
from tf_lottery.data import augment as augment_lib
from tf_lottery.data import pipeline
from tf_lottery.errors import RunError
from tf_lottery.experiment import files
from tf_lottery.experiment.paths import RunPaths
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training import checkpoints, progress, summaries
from tf_lottery.training.hooks import ActiveRun, Hook
from tf_lottery.training.loop import ModelWrap
from tf_lottery.training.workbench import Workbench, fresh_weights
from tf_lottery.utils import exclusive_lock, read_json, write_json

MAX_STEPS_PER_CALL = 500  # bounds the time between progress updates


class DivergenceError(RunError):
    """Training loss became NaN or infinite; the message is one line."""


@dataclasses.dataclass(frozen=True)
class InitialWeights:
    """Where a run's starting weights come from: a weights file of the experiment, or a fresh seeded init."""

    label: str  # 'theta_0', 'theta_rewind', 'fresh', or what the file is
    file: Optional[str] = None
    seed: Optional[int] = None

    @classmethod
    def from_file(cls, path: str, label: str) -> "InitialWeights":
        return cls(label=label, file=path)

    @classmethod
    def fresh(cls, seed: int) -> "InitialWeights":
        return cls(label="fresh", seed=seed)


@dataclasses.dataclass(frozen=True, eq=False)
class RunSpec:
    """Everything that makes a run what it is.

    Attributes:
      directory: the run's folder (RunPaths).
      config: its effective settings: the experiment's, with any per-run overrides.
      replicate, level: where it sits in the experiment.
      name: the run's name, its folder's and its result's 'variant'.
      masks: {weight path: 0/1 array}; a mask.npz already in the folder wins (resumption).
      init: where its initial weights come from.
      start_iteration: the iteration its schedule and data stream start at (k when rewinding).
      data_seed: seed of its training data order.
      stop_iteration: end the run here instead of at the schedule's end (a replay of
        the start of another run; the schedule is the full one).
      model_wrap: train the model through this transformation of it (training.loop.ModelWrap:
        tfmot's pruning wrappers for the gmp branch); None: the masked model itself.
    """

    directory: str
    config: ExperimentConfig
    replicate: int
    level: int
    name: str
    masks: masks_lib.Masks = dataclasses.field(repr=False)
    init: InitialWeights
    start_iteration: int = 0
    data_seed: int = 0
    stop_iteration: Optional[int] = None
    model_wrap: Optional[ModelWrap] = None

    @property
    def end_iteration(self) -> int:
        return self.stop_iteration or self.config.training.iterations

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.directory)

    @property
    def description(self) -> str:
        return f"replicate {self.replicate} level {self.level} {self.name}"

    def record(self, root: str) -> Dict:
        """run.json: the spec, paths relative to the experiment folder `root`."""
        init = {"label": self.init.label}
        if self.init.file is not None:
            init["file"] = os.path.relpath(self.init.file, root)
        else:
            init.update(seed=self.init.seed, file=os.path.relpath(self.paths.initial_weights, root))
        record = {"name": self.name, "replicate": self.replicate, "level": self.level, "init": init,
                  "start_iteration": self.start_iteration, "data_seed": self.data_seed, "config": self.config.flat()}
        if self.stop_iteration:
            record["stop_iteration"] = self.stop_iteration
        if self.model_wrap is not None:
            record["model_wrap"] = self.model_wrap.key
        return record


def train(spec: RunSpec, bench: Workbench, hooks: Sequence[Hook] = (), wait: bool = True) -> Optional[Dict]:
    """Trains (or resumes, or just reads) one run; returns its result.json.

    Args:
      spec: the run.
      bench: the process's strategy, files and trainers.
      hooks: called by the training loop (see training.hooks).
      wait: when another process holds the run, wait for it (True) or leave the run to
        it and return None (False), so processes sharing an experiment split its runs.
    """
    paths = spec.paths
    if os.path.exists(paths.result):
        return read_json(paths.result)
    if distribute.is_multi_worker(bench.strategy):
        return _train_locked(spec, bench, hooks)  # the workers train each run together
    with exclusive_lock(paths.lock, wait=wait) as held:
        if not held:
            progress.announce(spec.config.run.progress, f"{spec.description}: another process is training it", bench.stream)
            return None
        if os.path.exists(paths.result):
            return read_json(paths.result)
        return _train_locked(spec, bench, hooks)


def train_group(specs: Sequence[RunSpec], bench: Workbench, hooks: Optional[Sequence[Sequence[Hook]]] = None,
                wait: Union[bool, Sequence[bool]] = True) -> List[Optional[Dict]]:
    """Trains (or resumes, or reads) several independent runs side by side; returns their results.

    The runs this process can take (no result.json, lock free) train in lockstep through
    one TrainerGroup, each from its own start or last checkpoint with its own model,
    optimizer, data stream, hooks, checkpoints and files, so each result equals the run
    trained alone by train(). A run finishes (result.json) as soon as it reaches its end;
    the others go on. Runs another process holds are then left to it or waited for, as
    `wait` (one value, or one per run) says. With one run, several workers, or a task
    whose trainer is not a Trainer (reinforcement learning), the runs train one by one.
    """
    specs = list(specs)
    hooks = [()] * len(specs) if hooks is None else list(hooks)
    waits = [wait] * len(specs) if isinstance(wait, bool) else list(wait)
    if len(specs) < 2 or not group_trainable(specs, bench):
        return [train(spec, bench, h, wait=w) for spec, h, w in zip(specs, hooks, waits)]
    results: List[Optional[Dict]] = [None] * len(specs)
    deferred, taken = [], []
    with contextlib.ExitStack() as locks:
        for index, spec in enumerate(specs):
            if os.path.exists(spec.paths.result):
                results[index] = read_json(spec.paths.result)
            elif not locks.enter_context(exclusive_lock(spec.paths.lock, wait=False)):
                deferred.append(index)
            elif os.path.exists(spec.paths.result):  # finished while we looked
                results[index] = read_json(spec.paths.result)
            else:
                taken.append(index)
        for index, result in zip(taken, _train_group_locked([specs[i] for i in taken], bench,
                                                             [hooks[i] for i in taken])):
            results[index] = result
    for index in deferred:  # held by another process when we looked
        results[index] = train(specs[index], bench, hooks[index], wait=waits[index])
    return results


def group_trainable(specs: Sequence[RunSpec], bench: Workbench) -> bool:
    """Whether these runs can train side by side in one process: one worker, a supervised task."""
    if distribute.is_multi_worker(bench.strategy):
        return False
    return all(tasks.of(bench.splits(spec.config).info).supervised for spec in specs)


def _train_group_locked(specs: Sequence[RunSpec], bench: Workbench, hooks: Sequence[Sequence[Hook]]) -> List[Optional[Dict]]:
    results: List[Optional[Dict]] = [None] * len(specs)
    trainings: Dict[int, _Training] = {}
    try:
        for slot, (spec, run_hooks) in enumerate(zip(specs, hooks)):
            trainings[slot] = _Training(spec, bench, run_hooks, slot=slot)
            trainings[slot].begin()
        while trainings:
            for slot in [s for s, t in trainings.items() if t.done]:  # finished: its files now, not at the end
                training = trainings.pop(slot)
                training.close()
                results[slot] = training.finish()
            if not trainings:
                break
            active = list(trainings.values())
            steps = min(t.next_stop() - t.iteration for t in active)
            if len(active) == 1:
                active[0].trainer.train(active[0].iterator, steps)
            else:
                bench.group([t.trainer for t in active]).train([t.iterator for t in active], steps)
            for training in active:
                training.advanced(steps)
    finally:
        for training in trainings.values():
            training.close()
    return results


def _starting_point(spec: RunSpec, bench: Workbench):
    """(masks, initial weight values) of the run; writes run.json, mask.npz and fresh weights once,
    after everything it reads has been read."""
    paths, chief = spec.paths, bench.is_chief
    run_masks = masks_lib.load(paths.mask) if os.path.exists(paths.mask) else spec.masks
    names = None
    if spec.init.file is not None:
        values = files.read_weights(spec.init.file, recover="delete it and the runs that started from it to compute them again")
    elif os.path.exists(paths.initial_weights):
        values = files.read_weights(paths.initial_weights)
    else:
        names, values = fresh_weights(spec.config, bench.splits(spec.config).info, spec.init.seed)
    if chief:
        if not os.path.exists(paths.mask):
            masks_lib.save(paths.mask, run_masks)
        if not os.path.exists(paths.spec):
            write_json(paths.spec, spec.record(bench.files.root))
        if names is not None:  # stored, so that this run's ticket can be exported like any other
            files.write_weights(paths.initial_weights, names, values)
    return run_masks, values


def _train_locked(spec: RunSpec, bench: Workbench, hooks: Sequence[Hook]) -> Optional[Dict]:
    """Sets the model to the run's start (or its last checkpoint) and trains it to the end."""
    [result] = _train_group_locked([spec], bench, [hooks])  # a group of one: the Trainer's own loop
    return result


class _Training:
    """One run from its start (or last checkpoint) to its end, advanced chunk by chunk, so that the
    loop of one run and the lockstep loop of a group of runs (train_group) share everything else."""

    def __init__(self, spec: RunSpec, bench: Workbench, hooks: Sequence[Hook], slot: int = 0):
        paths, config, chief = spec.paths, spec.config, bench.is_chief
        self.spec, self.bench, self.hooks = spec, bench, hooks
        run_masks, initial = _starting_point(spec, bench)
        trainer = self.trainer = bench.trainer(config, spec.model_wrap, slot)
        checkpoints.assign_weights(trainer.model, initial, source="initial weights")
        masks_lib.apply_masks(trainer.model, run_masks)
        trainer.reset(spec.start_iteration)
        # Every worker restores the chief's checkpoint and takes part in each save
        # (reading synchronised variables may be a collective); other workers' copies go to scratch.
        self.checkpoint = checkpoints.RunCheckpoint(paths.checkpoints, trainer,
                                                    write_directory=bench.files.writable(paths.checkpoints))
        self.resumed = self.checkpoint.restore()
        self.iteration = int(trainer.iteration.numpy())
        self.log = summaries.MetricsLog(bench.files.writable(paths.metrics), paths.directory if chief else None,
                                        resume_iteration=self.iteration if self.resumed else None)
        self.run = ActiveRun(spec, bench, trainer, self.log, run_masks,
                             best_validation_loss=summaries.best_validation_loss(self.log.rows) if self.resumed else math.inf)
        self.bar = progress.RunProgress(config.run.progress and chief, spec.description, self.iteration,
                                        spec.end_iteration)
        self.total = spec.end_iteration
        self.iterator = None
        self.started = time.time()

    def begin(self):
        """The hooks' on_start, the first evaluation of a new run, and the training stream."""
        for hook in self.hooks:
            hook.on_start(self.run, self.resumed)
        if not self.resumed:
            _log_masks(self.log, self.spec.start_iteration, self.run.masks)
            self.run.evaluate(self.spec.start_iteration, self.hooks)
        self.iterator = _training_iterator(self.spec, self.bench, self.iteration)

    @property
    def done(self) -> bool:
        return self.iteration >= self.total

    def next_stop(self) -> int:
        return _next_stop(self.iteration, self.total, self.spec.config, self.hooks)

    def advanced(self, steps: int):
        """After `steps` more steps: at the run's next stop, what the loop does there (hooks, evaluation,
        the divergence check, checkpoint, progress); between stops nothing."""
        target = self.next_stop()
        self.iteration += steps
        if self.iteration < target:
            return
        run, trainer, training, iteration = self.run, self.trainer, self.spec.config.training, self.iteration
        for hook in self.hooks:
            hook.at_stop(run, iteration)
        if run.stop_requested:  # a hook ends the run here (Early-Bird): evaluated and finished as at the end
            self.total = iteration
        train_metrics = trainer.train_metrics()
        evaluated = iteration % training.eval_every == 0 or iteration == self.total
        if evaluated:
            if not np.isfinite(train_metrics["loss"]):
                raise DivergenceError(
                    f"{self.spec.description} diverged by iteration {iteration} (training loss "
                    f"{train_metrics['loss']}); lower --learning_rate or add --warmup_iterations")
            self.log.log(iteration, "train", {**train_metrics, "learning_rate": trainer.learning_rate()})
            trainer.reset_train_metrics()
            run.evaluate(iteration, self.hooks, final=iteration == self.total)
        if iteration % training.checkpoint_every == 0 and iteration < self.total:
            self.checkpoint.save(iteration)
            for hook in self.hooks:
                hook.on_checkpoint(run, iteration)
        self.bar.update(iteration, train_metrics, evaluated)

    def close(self):
        self.bar.close()
        self.log.close()

    def finish(self) -> Optional[Dict]:
        return _finish(self.run, time.time() - self.started, self.hooks)


def _finish(run: ActiveRun, seconds: float, hooks: Sequence[Hook]) -> Optional[Dict]:
    """Writes final weights and result.json (the chief), drops the checkpoints; returns the result."""
    spec, bench, paths = run.spec, run.bench, run.spec.paths
    checkpoints.save_weights(run.model, bench.files.writable(paths.final_weights))
    # The model's masks, not the starting ones: a hook may have pruned while it trained.
    result = _result(spec, masks_lib.get_masks(run.model), bench.files.writable(paths.metrics), seconds)
    for hook in hooks:
        hook.on_end(run, result)
    if bench.is_chief:
        write_json(paths.result, result)
        shutil.rmtree(paths.checkpoints, ignore_errors=True)
        metric = tasks.of(bench.splits(spec.config).info).metric
        named = metric.replace("_", " ")
        progress.announce(
            spec.config.run.progress,
            f"{spec.description}: density {result['density']:.2%} final test {named} "
            f"{result.get(f'final_test_{metric}', float('nan')):.4f} early stop "
            f"{result.get(f'early_stop_test_{metric}', float('nan')):.4f} at iteration {result['early_stop_iteration']}",
            bench.stream,
        )
    else:
        shutil.rmtree(bench.files.writable(paths.checkpoints), ignore_errors=True)
        result = None
    bench.barrier()  # what comes next reads this run's final weights and mask
    return result


def _next_stop(iteration: int, total: int, config: ExperimentConfig, hooks: Sequence[Hook]) -> int:
    eval_every, save_every = config.training.eval_every, config.training.checkpoint_every
    stops = [total, iteration + MAX_STEPS_PER_CALL,
             (iteration // eval_every + 1) * eval_every, (iteration // save_every + 1) * save_every]
    stops += [stop for hook in hooks for stop in [hook.next_stop(iteration)] if stop is not None and stop > iteration]
    return min(stops)


def training_augmentation(config: ExperimentConfig):
    """The augmentation a run's training batches get (None: none): --augment, or with auto the model's default."""
    mode = config.data.augment
    augment = mode == "on" or (mode == "auto" and models.spec(config.model.model).augment)
    return augment_lib.pad_crop_flip if augment else None


def _training_iterator(spec: RunSpec, bench: Workbench, start_iteration: int):
    """What Trainer.train reads from iteration `start_iteration` on: the batch stream (resident on one
    replica, else distributed), or for reinforcement learning the run's seeded episodes."""
    if not tasks.of(bench.splits(spec.config).info).supervised:
        from tf_lottery.tasks import reinforcement  # pylint: disable=import-outside-toplevel

        return reinforcement.training_stream(spec.config, spec.data_seed, start_iteration)
    stream = bench.resident_stream(spec.config, spec.data_seed, start_iteration, training_augmentation(spec.config))
    if stream is not None:
        return stream
    return iter(bench.strategy.distribute_datasets_from_function(_training_input(spec, bench, start_iteration)))


def _training_input(spec: RunSpec, bench: Workbench, start_iteration: int):
    config, splits = spec.config, bench.splits(spec.config)
    augment = training_augmentation(config)

    def dataset_fn(context):
        return pipeline.training_dataset(
            splits.train_images, splits.train_labels, splits.info,
            batch_size=context.get_per_replica_batch_size(config.data.batch_size), seed=spec.data_seed,
            start_iteration=start_iteration, augment=augment,
            batches_per_step=context.num_replicas_in_sync // context.num_input_pipelines,
            num_shards=context.num_input_pipelines, shard_index=context.input_pipeline_id,
        )

    return dataset_fn


def _log_masks(log: summaries.MetricsLog, iteration: int, run_masks: masks_lib.Masks):
    values = {"density": masks_lib.density(run_masks)}
    values.update({f"density/{name}": d for name, d in masks_lib.weight_densities(run_masks).items()})
    log.log(iteration, "mask", values)


def _result(spec: RunSpec, run_masks: masks_lib.Masks, metrics_path: str, seconds: float) -> Dict:
    summary = summaries.summarize(summaries.read_metrics(metrics_path))
    counts = masks_lib.counts(run_masks)
    return {
        "replicate": spec.replicate, "level": spec.level, "variant": spec.name,
        "density": masks_lib.density(run_masks),
        "remaining_weights": sum(counts.values()),
        "total_weights": sum(m.size for m in run_masks.values()),
        "weight_densities": masks_lib.weight_densities(run_masks),
        "train_seconds": round(seconds, 2),
        **summary,
        # What this run cost on its own; experiment.results adds what its mask cost (iterations_spent).
        "iterations_trained": int(summary.get("final_iteration", spec.end_iteration)) - spec.start_iteration,
    }

