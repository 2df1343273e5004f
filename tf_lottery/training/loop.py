"""Compiled, distribution-aware training and evaluation of one model.

A Trainer is made once per replicate and reused by every level and variant:
`reset()` gives the next run a fresh optimizer state and starts the iteration
counter (which drives the learning-rate schedule) where that run starts, so the
compiled functions are traced once.

With XLA (`jit_compile`) each training step is one compiled cluster; the loop
around it, which reads the input pipeline, is not (tf.data has no XLA kernels),
and neither is evaluation (measured no faster). A run reading a
pipeline.ResidentStream takes a chunk's batches from it at once and trains the
whole chunk in one XLA cluster (the loop too), the same steps on the same batches,
bit for bit, with less overhead per step. A model XLA cannot compile falls back to
the plain step, with one warning.

Evaluation on one replica reads its splits from tensors preprocessed once and kept
on the model's device (pipeline.ResidentSplit), in the dataset path's batches and
order, so the sums are the same; with several replicas it reads a distributed dataset.

A TrainerGroup trains several Trainers' runs in lockstep through one compiled loop
(--parallel_runs): each step of the group takes one step of every member, from
its own iterator, with its own compiled step, optimizer and iteration counter, so
each member computes exactly what it computes alone; the group saves the loop's
per-step overhead and lets the members' independent steps run side by side.

A ModelWrap trains the model through another forward pass that shares its variables
(tfmot's pruning wrappers, for the gmp branch): `model` stays the masked model that
weights files, masks and checkpoints are about, `forward_model` is what the training
step and evaluation call. Wrapped steps are never compiled with XLA.
"""

import dataclasses
import logging
from typing import Callable, Hashable, Optional

import tensorflow as tf
import tf_keras as keras

from tf_lottery import tasks
from tf_lottery.data import pipeline
from tf_lottery.training import schedules

_warned = set()


# auto compiles only runs this long: XLA's few seconds of compilation must be earned back.
AUTO_MIN_ITERATIONS = 2000


def use_xla(mode: str, strategy: tf.distribute.Strategy, iterations: int, model: keras.Model,
            task: tasks.Task = tasks.get(tasks.CLASSIFICATION)) -> bool:
    """Whether --jit_compile=`mode` compiles the training step of `model`'s `iterations`-long runs.

    auto is on where it was measured faster and exact (benchmarks/throughput.py, a
    2-core CPU): one replica on the CPU, a model without convolutions (a LeNet-300-100
    step 1.75x faster; Conv-2's convolutions ran 2x slower under XLA), and runs of at
    least AUTO_MIN_ITERATIONS, which earn back the 2-5 s of compilation. GPUs, TPUs
    and several replicas keep the plain path until measured there.
    """
    if mode in ("on", "off"):
        return mode == "on"
    if iterations < AUTO_MIN_ITERATIONS or any(len(w.shape) == 4 for w in model.trainable_weights):
        return False
    if task.name != tasks.CLASSIFICATION:
        return False  # not measured for language models yet
    if strategy.num_replicas_in_sync != 1 or isinstance(strategy, tf.distribute.TPUStrategy):
        return False
    return not tf.config.list_logical_devices("GPU")


# auto trains this many runs side by side where it was measured faster.
AUTO_PARALLEL_RUNS = 8


def parallel_width(mode: str, strategy: tf.distribute.Strategy, iterations: int, model: keras.Model,
                   task: tasks.Task = tasks.get(tasks.CLASSIFICATION)) -> int:
    """How many runs --parallel_runs=`mode` trains side by side (a TrainerGroup of that many at most).

    auto is AUTO_PARALLEL_RUNS where it was measured faster (benchmarks/throughput.py, an
    idle 2-core CPU: two to eight LeNet-300-100 runs side by side, XLA on, train at 1.27-1.33x
    the rate of one after another), under use_xla's conditions: one replica on
    the CPU, a model without convolutions, runs of at least AUTO_MIN_ITERATIONS (each
    member compiles its own step), image classification. Elsewhere 1 until measured there.
    """
    if mode != "auto":
        return int(mode)
    return AUTO_PARALLEL_RUNS if use_xla("auto", strategy, iterations, model, task) else 1


def batchnorm_gammas(model: keras.Model) -> list:
    """The trainable scale (gamma) variables of every BatchNorm layer of `model`, nested models included."""
    from tf_lottery.pruning.constraint import walk_layers  # pylint: disable=import-outside-toplevel

    return [layer.gamma for layer in walk_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization) and getattr(layer, "gamma", None) is not None
            and layer.trainable]


@dataclasses.dataclass(frozen=True, eq=False)
class ModelWrap:
    """A transformation of the masked model for training, e.g. tfmot's pruning wrappers.

    Attributes:
      key: hashable and JSON-friendly; trainers are cached by it (and run.json records it).
      build: masked model -> forward model, sharing the masked model's variables; called once,
        under the strategy scope. Its own variables (tfmot's masks, thresholds, step counter)
        are checkpointed with the run.
      reset: sets the forward model's own state back to a run's start (Trainer.reset calls it).
    """

    key: Hashable
    build: Callable[[keras.Model], keras.Model]
    reset: Callable[[keras.Model], None] = lambda forward: None


class Trainer:
    """Runs chunks of training steps and full evaluations under a tf.distribute strategy."""

    def __init__(self, strategy: tf.distribute.Strategy, model: keras.Model, training_config, global_batch_size: int,
                 mixed_precision: str = "float32", jit_compile: bool = False, wrap: Optional[ModelWrap] = None,
                 task: tasks.Task = tasks.get(tasks.CLASSIFICATION)):
        """Create it under `strategy.scope()`.

        Args:
          strategy: the strategy the model's variables were created under.
          model: the masked model to train.
          training_config: the experiment's TrainingConfig.
          global_batch_size: examples per step over all replicas; losses are averaged over it.
          mixed_precision: the model's Keras dtype policy; mixed_float16 adds dynamic loss scaling.
          jit_compile: compile each step with XLA (see use_xla); falls back when the model cannot be.
          wrap: train and evaluate through wrap.build(model) (never with XLA); None: the model itself.
          task: what the labels are (tf_lottery.tasks): a language model's labels are a window's next
            characters, its loss and accuracy are per character.
        """
        self.strategy = strategy
        self.model = model
        self.wrap = wrap
        self.task = task
        with strategy.scope():
            self.forward_model = wrap.build(model) if wrap is not None else model
        self.global_batch_size = global_batch_size
        self.weight_decay = float(training_config.weight_decay)
        self.bn_l1 = float(getattr(training_config, "bn_l1", 0.0))
        # --bn_l1's Network Slimming penalty reads the BatchNorm scales (gamma) only.
        self.bn_gammas = batchnorm_gammas(model) if self.bn_l1 > 0 else []
        with strategy.scope():
            self.iteration = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="iteration",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            self.schedule = schedules.from_config(training_config, self.iteration)
            self.optimizer = schedules.make_optimizer(training_config, self.schedule)
            if mixed_precision == "mixed_float16":
                # float16 gradients underflow without it; bfloat16 has float32's range and needs none.
                self.optimizer = keras.mixed_precision.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(model.trainable_variables)
            self.train_loss = keras.metrics.Mean("train_loss")
            self.train_accuracy = keras.metrics.SparseCategoricalAccuracy("train_accuracy")
        self.loss_scaling = isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer)
        self.jit_compile = bool(jit_compile) and wrap is None and self._compiles()
        self._step_fn = tf.function(self._step, jit_compile=True) if self.jit_compile else self._step
        self._train_steps = tf.function(self._train_steps_fn)
        self._train_chunk = tf.function(self._train_chunk_fn, jit_compile=True)
        self._evaluate = tf.function(self._evaluate_fn)
        self._evaluate_resident = tf.function(self._evaluate_resident_fn)

    def _compiles(self) -> bool:
        """Whether XLA compiles this model's training step (checked on a batch of zeros; nothing runs)."""
        shape = [max(1, self.global_batch_size // self.strategy.num_replicas_in_sync), *self.model.input_shape[1:]]
        images = tf.zeros(shape, self.model.inputs[0].dtype)
        labels = tf.zeros(shape[:1] + list(self.model.output_shape[1:-1]), tf.int64)
        try:
            with self.strategy.scope():
                tf.function(self._step, jit_compile=True).experimental_get_compiler_ir(images, labels)(stage="hlo")
            return True
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, ValueError, TypeError) as error:
            if self.model.name not in _warned:
                _warned.add(self.model.name)
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                logging.getLogger("tf_lottery").warning(
                    "--jit_compile: XLA cannot compile model %s (%s); training it without XLA", self.model.name, reason)
            return False

    # Training -----------------------------------------------------------------

    def reset(self, start_iteration: int):
        """Fresh optimizer state, metrics and wrapper state; the schedule resumes at `start_iteration`."""
        for variable in self.optimizer.variables:
            variable.assign(tf.zeros_like(variable))
        if self.loss_scaling and self.optimizer.dynamic:
            # The loss scale is optimizer state too: a run must not inherit the previous run's.
            state = self.optimizer._loss_scale  # pylint: disable=protected-access
            state.current_loss_scale.assign(state.initial_loss_scale)
            state.counter.assign(0)
        self.iteration.assign(start_iteration)
        if self.wrap is not None:
            self.wrap.reset(self.forward_model)
        self.reset_train_metrics()

    def reset_train_metrics(self):
        self.train_loss.reset_state()
        self.train_accuracy.reset_state()

    def learning_rate(self) -> float:
        return float(self.schedule())

    def _step(self, images, labels):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            # Under a mixed policy the logits are float16/bfloat16: the loss is taken in float32.
            logits = tf.cast(self.forward_model(images, training=True), tf.float32)
            per_example = tasks.per_example_loss(labels, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
            if self.weight_decay > 0:
                # Coupled L2, as torch.optim's weight_decay: gradient += wd * w.
                penalty = 0.5 * self.weight_decay * tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])
                loss += tf.nn.scale_regularization_loss(penalty)
            if self.bn_gammas:
                # Network Slimming's sparsity penalty lambda * sum |gamma| (Liu et al. 2017; Early-Bird).
                sparsity = self.bn_l1 * tf.add_n([tf.reduce_sum(tf.abs(g)) for g in self.bn_gammas])
                loss += tf.nn.scale_regularization_loss(sparsity)
            if self.loss_scaling:
                loss = self.optimizer.get_scaled_loss(loss)
        gradients = tape.gradient(loss, variables)
        if self.loss_scaling:
            gradients = self.optimizer.get_unscaled_gradients(gradients)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.train_loss.update_state(per_example)
        self.train_accuracy.update_state(labels, logits)

    def _train_steps_fn(self, iterator, steps):
        for _ in tf.range(steps):
            images, labels = next(iterator)
            self.strategy.run(self._step_fn, args=(images, labels))
            self.iteration.assign_add(1)

    def _train_chunk_fn(self, images, labels):
        for i in tf.range(tf.shape(images, out_type=tf.int64)[0]):
            self.strategy.run(self._step, args=(images[i], labels[i]))
            self.iteration.assign_add(1)

    def train(self, iterator, steps: int):
        """Runs `steps` training steps from a distributed iterator or a pipeline.ResidentStream."""
        if self.jit_compile and isinstance(iterator, pipeline.ResidentStream):
            # The stream's batches taken at once, the loop over them one XLA cluster (see module docstring).
            for chunk in chunks(steps, iterator.max_take):
                self._train_chunk(*iterator.take(chunk))
            return
        self._train_steps(iterator, tf.constant(steps, tf.int64))

    def train_metrics(self):
        return {"loss": float(self.train_loss.result()), "accuracy": float(self.train_accuracy.result())}

    # Evaluation ---------------------------------------------------------------

    def _eval_step(self, images, labels):
        logits = tf.cast(self.forward_model(images, training=False), tf.float32)
        # Sums over every position of every example: a language model's loss and accuracy are per character.
        loss_sum = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), labels), tf.float32))
        return tf.stack([loss_sum, correct, tf.cast(tf.size(labels), tf.float32)])

    def _evaluate_fn(self, dataset):
        totals = tf.zeros([3])
        for images, labels in dataset:
            per_replica = self.strategy.run(self._eval_step, args=(images, labels))
            totals += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return totals

    def _evaluate_resident_fn(self, images, labels, batch_size):
        # The same batches, in the same order, as the dataset path: the same sums.
        totals = tf.zeros([3])
        for start in tf.range(0, tf.shape(images, out_type=tf.int64)[0], batch_size):
            per_replica = self.strategy.run(
                self._eval_step, args=(images[start:start + batch_size], labels[start:start + batch_size]))
            totals += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return totals

    def evaluate(self, split):
        """{'loss', 'accuracy'} (and what the task derives from them) of the model over a distributed
        dataset or a pipeline.ResidentSplit."""
        if isinstance(split, pipeline.ResidentSplit):
            totals = self._evaluate_resident(split.images, split.labels, tf.constant(split.batch_size, tf.int64))
        else:
            totals = self._evaluate(split)
        loss_sum, correct, count = totals.numpy()
        values = {"loss": float(loss_sum / count), "accuracy": float(correct / count)}
        return {**values, **self.task.derived(values)}


class TrainerGroup:
    """Several Trainers (of one strategy) trained in lockstep by one compiled loop.

    Each step of `train` takes one step of every member in order: the member reads its
    own iterator and runs its own (XLA-compiled or plain) step function, which updates
    only its own model, optimizer state, metrics and iteration counter. Nothing passes
    between members, so a member's run equals the one its Trainer trains alone; the
    group saves the loop's per-step overhead and leaves TensorFlow free to run the
    members' independent steps at the same time (on a 2-core CPU, two LeNet-300-100
    steps side by side take about 1.6x one step: benchmarks/throughput.py).
    """

    def __init__(self, trainers):
        trainers = tuple(trainers)
        if not trainers or len({id(t) for t in trainers}) != len(trainers):
            raise ValueError("a TrainerGroup needs distinct Trainers")
        if len({id(t.strategy) for t in trainers}) != 1:
            raise ValueError("the Trainers of a group must share one strategy")
        self.trainers = trainers
        self.strategy = trainers[0].strategy
        self._train_steps = tf.function(self._train_steps_fn)
        self._train_chunks = tf.function(self._train_chunks_fn, jit_compile=True)

    def _train_steps_fn(self, iterators, steps):
        for _ in tf.range(steps):
            for trainer, iterator in zip(self.trainers, iterators):
                images, labels = next(iterator)
                self.strategy.run(trainer._step_fn, args=(images, labels))  # pylint: disable=protected-access
                trainer.iteration.assign_add(1)

    def _train_chunks_fn(self, batches):
        for i in tf.range(tf.shape(batches[0][0], out_type=tf.int64)[0]):
            for trainer, (images, labels) in zip(self.trainers, batches):
                self.strategy.run(trainer._step, args=(images[i], labels[i]))  # pylint: disable=protected-access
                trainer.iteration.assign_add(1)

    def train(self, iterators, steps: int):
        """Runs `steps` steps of every member, member i reading `iterators[i]`."""
        if len(iterators) != len(self.trainers):
            raise ValueError(f"{len(iterators)} iterators for {len(self.trainers)} trainers")
        if (all(t.jit_compile for t in self.trainers)
                and all(isinstance(i, pipeline.ResidentStream) for i in iterators)):
            for chunk in chunks(steps, min(i.max_take for i in iterators)):
                self._train_chunks(tuple(i.take(chunk) for i in iterators))
            return
        self._train_steps(tuple(iterators), tf.constant(steps, tf.int64))


def chunks(steps: int, limit: int):
    """`steps` as consecutive pieces of at most `limit`."""
    while steps > 0:
        yield min(steps, limit)
        steps -= min(steps, limit)
