"""--strategy -> a tf.distribute strategy, and what code needs to know about it.

One flag moves the same experiment from a CPU to several GPUs, several hosts or
a TPU; nothing else changes. `--batch_size` stays the global batch, so results
match the single-device run up to the order of floating-point reductions.

Call order matters: `configure_devices` must run before anything initialises
TensorFlow's devices (building a model, reading a dataset, listing devices). It
also makes the multi_worker strategy, whose collective ops can only be configured
at program start-up.
"""

import contextlib
import os
import shutil
import tempfile
import weakref

import tensorflow as tf
import tf_keras as keras

from tf_lottery.config import ConfigError


def configure_devices(run_config):
    """Everything TensorFlow fixes when it initialises: call before anything touches devices.

    Applies --num_cpu_devices and, for --strategy=multi_worker, makes the strategy
    now, since its collective ops can only be configured at start-up;
    `make_strategy` then returns that one.

    Raises:
      ConfigError: a device split or cluster that cannot be set up.
    """
    split_cpu(run_config.num_cpu_devices)
    if run_config.strategy == "multi_worker" and not run_config.dry_run and "multi_worker" not in _MADE_AT_START_UP:
        _MADE_AT_START_UP["multi_worker"] = _multi_worker_strategy()


_MADE_AT_START_UP = {}


def split_cpu(count: int):
    """Splits the first physical CPU into `count` logical devices (0 or 1: leave it whole).

    Lets MirroredStrategy run `count` replicas on a machine without GPUs, for
    tests and for trying a multi-replica configuration before paying for GPUs.

    Raises:
      ConfigError: TensorFlow's devices were initialised already with another count.
    """
    if count <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        # Devices are fixed once initialised; the same split done earlier is fine.
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != count:
            raise ConfigError(
                f"--num_cpu_devices: TensorFlow's devices were initialised already with {existing} CPU device(s); "
                "set it before anything touches TensorFlow"
            ) from None


def make_strategy(run_config) -> tf.distribute.Strategy:
    """The strategy --strategy names.

    auto: mirrored over every GPU when there are several (or over the logical CPUs
    --num_cpu_devices made), one_device on a single GPU, the default strategy on a
    plain CPU.

    Raises:
      ConfigError: the strategy cannot be made here (no TPU reachable, for one).
    """
    name = run_config.strategy
    # Before anything lists devices: listing them initialises TensorFlow, and then
    # collective ops (multi_worker) can no longer be configured.
    if name == "multi_worker":
        return _MADE_AT_START_UP.get("multi_worker") or _multi_worker_strategy()
    if name == "tpu":
        return _tpu_strategy(run_config.tpu)
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if name == "auto":
        if len(gpus) > 1 or (not gpus and len(cpus) > 1):
            name = "mirrored"
        else:
            name = "one_device" if gpus else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy([d.name for d in (gpus or cpus)])
    raise ConfigError(f"--strategy: unknown strategy {name!r}")


def _multi_worker_strategy() -> tf.distribute.Strategy:
    # Every local GPU of each worker is a replica; collectives over NCCL where there
    # are GPUs, gRPC ring all-reduce otherwise (TensorFlow picks).
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:  # "Collective ops must be configured at program startup"
        raise ConfigError(f"--strategy: multi_worker must be created before TensorFlow runs anything ({error})") from None
    except ValueError as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"--strategy: multi_worker needs a valid TF_CONFIG ({first})") from None


def _tpu_strategy(address: str) -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ConfigError(f"--tpu: no TPU reachable at {address or '(default)'!r} ({first})") from None
    return tf.distribute.TPUStrategy(resolver)


# Workers ----------------------------------------------------------------------


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the experiment's files (True except on non-chief workers)."""
    return bool(strategy.extended.should_checkpoint)


def worker_index(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(getattr(resolver, "task_id", 0) or 0) if is_multi_worker(strategy) else 0


def barrier(strategy: tf.distribute.Strategy):
    """Returns once every worker has reached it; a no-op in a single process.

    Workers read what the chief wrote (a level's final weights, θ0) only after a
    barrier that the chief reaches after writing it, and decide what to run from
    what the chief has written only before the next barrier lets it write more, so
    every worker takes the same branches and meets the same collectives.
    """
    if not is_multi_worker(strategy):
        return
    if strategy not in _BARRIERS:

        def one():
            return tf.ones([])

        def all_reduce():
            return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(one), axis=None)

        # Compiled once: run eagerly, every collective would warn about its overhead.
        _BARRIERS[strategy] = tf.function(all_reduce)
    _BARRIERS[strategy]().numpy()


_BARRIERS = weakref.WeakKeyDictionary()


class ScratchDirectory:
    """Where a non-chief worker writes what the chief alone keeps.

    TensorFlow's multi-worker rule: every worker takes part in a save (reading
    synchronised variables may be a collective), but only the chief's copy is kept;
    the others write to a temporary location and delete it.
    """

    def __init__(self, strategy: tf.distribute.Strategy, root: str):
        self.root = root
        self.is_chief = is_chief(strategy)
        self.scratch = None if self.is_chief else tempfile.mkdtemp(prefix=f"tf_lottery_worker{worker_index(strategy)}_")

    def writable(self, path: str) -> str:
        """`path` on the chief; the same place under the scratch directory on other workers."""
        if self.is_chief:
            return path
        return os.path.join(self.scratch, os.path.relpath(path, self.root))

    def close(self):
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


# Mixed precision --------------------------------------------------------------


@contextlib.contextmanager
def precision_policy(name: str):
    """Layers built inside compute in `name` ('float32', 'mixed_float16', 'mixed_bfloat16').

    Variables stay float32 under both mixed policies, so masks, resets and weight
    files are exactly as in float32; only the matmuls and activations are narrower.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
