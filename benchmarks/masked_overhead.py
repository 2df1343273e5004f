"""Time per training iteration with masks against the same model without masks.

    python benchmarks/masked_overhead.py --model=lenet300_100 --iterations=3000 --repeats=3

Both models train in this one process, alternately, each round in the other order,
through the same compiled loop and the same data pipeline; only the kernels'
MaskConstraint differs. The masked model is pruned to --density first so the
constraint does real work. Prints the median wall and CPU seconds per iteration
of each and their ratios masked/plain (goal: at most 1.05); on a machine shared with
other jobs the CPU-time ratio is the steadier of the two. Real MNIST is used for 28x28x1
models when it is prepared; other input shapes train on random images, which
time the same.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import tf_lottery  # noqa: E402,F401
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from tf_lottery import data, models  # noqa: E402
from tf_lottery.config import ExperimentConfig  # noqa: E402
from tf_lottery.data import pipeline  # noqa: E402
from tf_lottery.pruning import constraint, masks, prunable, strategies  # noqa: E402
from tf_lottery.training.loop import Trainer  # noqa: E402

DEFAULT_SHAPES = {"lenet300_100": (28, 28, 1), "mlp": (28, 28, 1)}


def unmasked_copy(model: keras.Model) -> keras.Model:
    """The same architecture and weights with every MaskConstraint and mask removed."""

    def clone(layer):
        return layer.__class__.from_config(constraint.without_masks(layer.get_config()))

    plain = keras.models.clone_model(model, clone_function=clone)
    plain.set_weights([v.numpy() for v in constraint.model_weights(model)])
    assert not prunable.prunable_weights(plain) and not constraint.mask_variables(plain)
    return plain


def training_data(input_shape, batch_size):
    if tuple(input_shape) == (28, 28, 1):
        try:
            splits = data.load("mnist", None, 5000, False)
            return splits.train_images, splits.train_labels, splits.info
        except data.DataError:
            pass
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(max(50 * batch_size, 5000),) + tuple(input_shape), dtype=np.uint8)
    labels = rng.integers(0, 10, size=len(images)).astype(np.int64)
    info = data.DatasetInfo("random", tuple(input_shape), 10, (0.5,) * input_shape[-1], (0.25,) * input_shape[-1])
    return images, labels, info


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet300_100")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--batch_size", type=int, default=60)
    parser.add_argument("--optimizer", default="adam", choices=("adam", "sgd", "momentum"))
    parser.add_argument("--density", type=float, default=0.2, help="density the masked model is pruned to")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps_per_call", type=int, default=500)
    args = parser.parse_args()

    input_shape = DEFAULT_SHAPES.get(args.model, (32, 32, 3))
    images, labels, info = training_data(input_shape, args.batch_size)
    config = ExperimentConfig().replace(model=args.model, optimizer=args.optimizer, batch_size=args.batch_size,
                                        iterations=args.iterations + 1)
    masked = models.build(args.model, input_shape, info.num_classes, seed=0)
    plain = unmasked_copy(masked)
    rates = {path: 1.0 - args.density for path in strategies.weight_rates(masked, config.pruning)}
    pruned = strategies.magnitude_masks(masks.prunable_values(masked), masks.ones_like_model(masked),
                                        strategies.groups(rates, "layerwise"), 1)
    masks.apply_masks(masked, pruned)
    strategy = tf.distribute.get_strategy()
    trainers = {
        "masked": Trainer(strategy, masked, config.training, args.batch_size),
        "plain": Trainer(strategy, plain, config.training, args.batch_size),
    }
    times = {name: [] for name in trainers}
    cpu_times = {name: [] for name in trainers}  # less sensitive than wall time to other jobs
    for repeat in range(args.repeats + 1):  # the first round warms up (tracing) and is not counted
        # Which model goes first alternates: the order alone shifts timings by several percent.
        order = list(trainers.items())[:: 1 if repeat % 2 else -1]
        for name, trainer in order:
            dataset = pipeline.training_dataset(images, labels, info, args.batch_size, seed=1)
            iterator = iter(strategy.experimental_distribute_dataset(dataset))
            trainer.train(iterator, 10)
            started, cpu_started = time.perf_counter(), time.process_time()
            done = 0
            while done < args.iterations:
                steps = min(args.steps_per_call, args.iterations - done)
                trainer.train(iterator, steps)
                done += steps
            float(trainer.train_metrics()["loss"])  # waits for the last step
            if repeat:
                times[name].append((time.perf_counter() - started) / args.iterations)
                cpu_times[name].append((time.process_time() - cpu_started) / args.iterations)
    zeros_kept = all(np.all(w.variable.numpy()[pruned[w.path] == 0] == 0) for w in prunable.prunable_weights(masked))
    masked_s, plain_s = statistics.median(times["masked"]), statistics.median(times["plain"])
    print(f"model {args.model} batch {args.batch_size} optimizer {args.optimizer} density {args.density:.0%} "
          f"iterations {args.iterations} x {args.repeats} repeats, tensorflow {tf.__version__}, {os.cpu_count()} CPUs")
    print(f"masked: {masked_s * 1e3:.3f} ms/iteration   plain: {plain_s * 1e3:.3f} ms/iteration")
    masked_cpu, plain_cpu = statistics.median(cpu_times["masked"]), statistics.median(cpu_times["plain"])
    print(f"CPU time: masked {masked_cpu * 1e3:.3f} ms/iteration   plain {plain_cpu * 1e3:.3f} ms/iteration   "
          f"ratio {masked_cpu / plain_cpu:.3f}")
    print(f"ratio masked/plain: {masked_s / plain_s:.3f} (goal <= 1.05); pruned weights still zero: {zeros_kept}")


if __name__ == "__main__":
    main()
