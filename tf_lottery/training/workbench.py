"""What the runs of one process share: the strategy, datasets in memory, built models and trainers.

Building a model and tracing its compiled training step take seconds, loading a
dataset more; a Workbench does each once per (model, data, training settings), so
the IMP loop and a branch train run after run on the same compiled functions.
"""

from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tf_lottery import data, distribute, tasks
from tf_lottery.config import ConfigError, ExperimentConfig
from tf_lottery.data import pipeline
from tf_lottery.lottery.plan import build_model
from tf_lottery.pruning import constraint
from tf_lottery.training.loop import ModelWrap, Trainer, TrainerGroup, parallel_width, use_xla


def fresh_weights(config: ExperimentConfig, info: data.DatasetInfo, seed: int) -> Tuple[List[str], List[np.ndarray]]:
    """A new random initialisation of the experiment's model: variable names and values, in model order."""
    # Built outside any strategy scope: only the values are needed, copied by position.
    model = build_model(config, info, seed=seed)
    variables = constraint.model_weights(model)
    return [v.name for v in variables], [v.numpy() for v in variables]


class Workbench:
    """The strategy, the experiment folder's writer and caches of datasets and trainers.

    Use as a context manager: on exit a non-chief worker's scratch files are removed.
    """

    def __init__(self, strategy: Optional[tf.distribute.Strategy], root: str, stream=None):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.files = distribute.ScratchDirectory(self.strategy, root)
        self.stream = stream
        self._trainers: Dict[tuple, Trainer] = {}
        self._eval_sets: Dict[tuple, dict] = {}
        self._train_sets: Dict[tuple, tuple] = {}
        self._groups: Dict[tuple, TrainerGroup] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.files.close()

    @property
    def is_chief(self) -> bool:
        return self.files.is_chief

    def barrier(self):
        distribute.barrier(self.strategy)

    def splits(self, config: ExperimentConfig) -> data.Splits:
        return data.for_config(config.data)  # cached per process

    def trainer(self, config: ExperimentConfig, wrap: Optional[ModelWrap] = None, slot: int = 0) -> Trainer:
        """The masked model and its compiled trainer for `config`, trained through `wrap` when given
        (built once per setting, wrap key and `slot`: runs trained side by side in a TrainerGroup
        take slots 0, 1, ... of the same settings, each its own model and optimizer)."""
        replicas = self.strategy.num_replicas_in_sync
        if config.data.batch_size % replicas:
            raise ConfigError(f"--batch_size: {config.data.batch_size} is not divisible by the {replicas} replicas")
        info = self.splits(config).info
        task = tasks.of(info)
        key = (config.model, info.input_shape, info.num_classes, config.training, config.data.batch_size,
               config.run.mixed_precision, config.run.jit_compile, None if wrap is None else wrap.key, info.task, slot)
        if key not in self._trainers:
            with self.strategy.scope(), distribute.precision_policy(config.run.mixed_precision):
                model = build_model(config, info)
                if not task.supervised:
                    from tf_lottery.tasks import reinforcement  # pylint: disable=import-outside-toplevel

                    self._trainers[key] = reinforcement.PolicyTrainer(self.strategy, model, config, info, wrap=wrap)
                else:
                    self._trainers[key] = Trainer(self.strategy, model, config.training, config.data.batch_size,
                                                  mixed_precision=config.run.mixed_precision,
                                                  jit_compile=use_xla(config.run.jit_compile, self.strategy,
                                                                      config.training.iterations, model, task),
                                                  wrap=wrap, task=task)
        return self._trainers[key]

    def parallel_width(self, config: ExperimentConfig) -> int:
        """How many of `config`'s runs this process trains side by side (--parallel_runs; see
        loop.parallel_width); 1 with several workers, which train each run together."""
        if distribute.is_multi_worker(self.strategy):
            return 1
        info = self.splits(config).info
        return parallel_width(config.run.parallel_runs, self.strategy, config.training.iterations,
                              self.trainer(config).model, tasks.of(info))

    def group(self, trainers) -> TrainerGroup:
        """The TrainerGroup of these trainers, in this order (its loop is traced once per group)."""
        key = tuple(id(t) for t in trainers)
        if key not in self._groups:
            self._groups[key] = TrainerGroup(trainers)
        return self._groups[key]

    def evaluation_sets(self, config: ExperimentConfig) -> Dict[str, object]:
        """{'validation', 'test'} (validation only when held out), for Trainer.evaluate: tensors kept
        on the device for one replica (pipeline.ResidentSplit), distributed datasets for several."""
        d = config.data
        key = (d.dataset, d.data_dir, d.validation_size, d.classes, d.eval_batch_size, d.sequence_length)
        if key not in self._eval_sets:
            splits = self.splits(config)
            if not tasks.of(splits.info).supervised:
                from tf_lottery.tasks import reinforcement  # pylint: disable=import-outside-toplevel

                self._eval_sets[key] = reinforcement.evaluation_sets(config, splits.info)
                return self._eval_sets[key]
            device = _single_device(self.strategy)

            def evaluation_set(images, labels):
                if device is not False:
                    return pipeline.ResidentSplit.create(images, labels, splits.info, d.eval_batch_size, device)
                return self.strategy.experimental_distribute_dataset(
                    pipeline.evaluation_dataset(images, labels, splits.info, d.eval_batch_size))

            self._eval_sets[key] = {
                split: evaluation_set(images, labels)
                for split, images, labels in (
                    ("validation", splits.validation_images, splits.validation_labels),
                    ("test", splits.test_images, splits.test_labels),
                ) if len(images)
            }
        return self._eval_sets[key]

    def resident_stream(self, config: ExperimentConfig, seed: int, start_iteration: int,
                        augment) -> Optional[pipeline.ResidentStream]:
        """The run's training stream drawn in the training loop (pipeline.ResidentStream) where that is
        exact and fits: one replica, no augmentation, a supervised task, a training split of at most
        RESIDENT_TRAINING_BYTES once preprocessed. None: the run reads a distributed dataset."""
        device = _single_device(self.strategy)
        splits = self.splits(config)
        if device is False or augment is not None or not tasks.of(splits.info).supervised:
            return None
        d = config.data
        key = (d.dataset, d.data_dir, d.validation_size, d.classes, d.sequence_length)
        if key not in self._train_sets:
            images = splits.train_images
            item = 4 if images.dtype == np.uint8 else images.dtype.itemsize  # uint8 pixels become float32
            if images.size * item > RESIDENT_TRAINING_BYTES:
                return None
            self._train_sets[key] = pipeline.resident_training_data(images, splits.train_labels, splits.info, device)
        images, labels = self._train_sets[key]
        return pipeline.ResidentStream.create(images, labels, d.batch_size, seed, start_iteration)


# A preprocessed training split kept on the device for ResidentStreams at most this large (MNIST: 172 MB).
RESIDENT_TRAINING_BYTES = 1 << 30


def _single_device(strategy: tf.distribute.Strategy):
    """The device of a one-replica, one-worker strategy (None: the default placement); False otherwise."""
    if strategy.num_replicas_in_sync != 1 or distribute.is_multi_worker(strategy):
        return False
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return False  # a TPU reads its inputs through the strategy
    try:
        devices = strategy.extended.worker_devices
    except (RuntimeError, NotImplementedError):  # the default strategy
        return None
    return devices[0] if len(devices) == 1 else False
