"""Training and evaluation throughput of the engine, with and without XLA, side by side.

    python benchmarks/throughput.py --models=lenet300_100,conv2 --steps=2000,30 --repeats=5

For each model one masked network (pruned to --density) is trained by three Trainers
in this one process, plain and XLA-compiled (`--jit_compile=off` and `on`) reading a
tf.data pipeline a step at a time, and XLA-compiled taking the same batches a chunk at
a time from a pipeline.ResidentStream, the chunk's loop compiled with it (what the
engine does on one replica without augmentation),
taking turns at going first in each round. It prints the median wall and CPU
milliseconds per training step, the achieved GFLOP/s (dense FLOPs of a forward and
backward pass: what the machine computes, masks or not), the ratios plain/XLA and
XLA/XLA+stream, and evaluation milliseconds per 1,000 images (evaluation is never
compiled: the columns time the same path). Then, for each N of --parallel, the
per-network step time of N runs trained side by side by one TrainerGroup
(--parallel_runs=N), on resident streams. On a machine shared with other jobs the
CPU-time ratio is the steadier one. Real MNIST is used for 28x28x1 models when it is
prepared; other shapes train on random images, which time the same.
"""

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

import tf_lottery  # noqa: E402,F401
import tensorflow as tf  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from masked_overhead import DEFAULT_SHAPES as SHAPES, training_data  # noqa: E402  (this script's folder)
from tf_lottery import flags as flags_lib, models  # noqa: E402
from tf_lottery.config import ExperimentConfig  # noqa: E402
from tf_lottery.data import pipeline  # noqa: E402
from tf_lottery.pruning import masks, strategies  # noqa: E402
from tf_lottery.training.loop import Trainer, chunks  # noqa: E402


def step_flops(model, batch_size) -> float:
    """Forward and backward FLOPs of one training step (3x the forward pass's multiply-adds x 2)."""
    forward = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        if len(kernel.shape) == 2:
            forward += 2 * int(np.prod(kernel.shape))
        elif len(kernel.shape) == 4:
            height, width = layer.output_shape[1:3]
            forward += 2 * int(np.prod(kernel.shape)) * height * width
    return 3.0 * forward * batch_size


def measure(model_name, steps, args):
    input_shape = SHAPES.get(model_name, (32, 32, 3))
    train_x, train_y, info = training_data(input_shape, args.batch_size)
    test_x, test_y = train_x[:5000], train_y[:5000]  # evaluation time depends on the count, not the images
    config = ExperimentConfig().replace(optimizer="adam", learning_rate=1e-3)
    trainers, iterators = {}, {}
    resident = pipeline.resident_training_data(train_x, train_y, info)
    # The engine on one replica (without augmentation) trains chunks of a resident stream in one XLA
    # cluster (xla+stream); plain and xla read the same batches from a tf.data pipeline a step at a time,
    # as the engine did before and still does elsewhere.
    for name, jit, stream in (("plain", False, False), ("xla", True, False), ("xla+stream", True, True)):
        model = models.build(model_name, input_shape, 10, seed=0)
        rates = {n: 1 - args.density for n in masks.get_masks(model)}
        pruned = strategies.magnitude_masks(masks.prunable_values(model), masks.ones_like_model(model),
                                            strategies.groups(rates, "layerwise"), 1)
        masks.apply_masks(model, pruned)
        trainers[name] = Trainer(tf.distribute.get_strategy(), model, config.training, args.batch_size, jit_compile=jit)
        assert trainers[name].jit_compile == jit, f"{model_name}: XLA could not compile it"
        iterators[name] = (pipeline.ResidentStream.create(*resident, args.batch_size, seed=1) if stream else
                           iter(pipeline.training_dataset(train_x, train_y, info, batch_size=args.batch_size, seed=1)))
        trainers[name].train(iterators[name], min(steps, args.chunk))  # trace and compile outside the timing
    evaluation = pipeline.evaluation_dataset(test_x, test_y, info, 1000)
    for trainer in trainers.values():
        trainer.evaluate(evaluation)
    timings = {name: {"wall": [], "cpu": [], "eval": []} for name in trainers}
    for round_ in range(args.repeats):
        names = list(trainers)
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            for chunk in chunks(steps, args.chunk):
                trainers[name].train(iterators[name], chunk)
            timings[name]["wall"].append((time.perf_counter() - wall) / steps * 1e3)
            timings[name]["cpu"].append((time.process_time() - cpu) / steps * 1e3)
            wall = time.perf_counter()
            trainers[name].evaluate(evaluation)
            timings[name]["eval"].append((time.perf_counter() - wall) / len(test_x) * 1e6)
    flops = step_flops(trainers["plain"].model, args.batch_size)
    median = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in timings.items()}
    print(f"{model_name} (batch {args.batch_size}, density {args.density:.0%}, {flops / 1e6:.0f} MFLOP a step, "
          f"{steps} steps x {args.repeats} rounds)")
    for name, m in median.items():
        print(f"  {name:10s}  train {m['wall']:7.3f} ms/step wall  {m['cpu']:7.3f} ms/step CPU  "
              f"{flops / m['wall'] / 1e6:6.1f} GFLOP/s   eval {m['eval']:7.2f} ms/1000 images")
    print(f"  plain/xla: train wall {median['plain']['wall'] / median['xla']['wall']:.2f}  "
          f"CPU {median['plain']['cpu'] / median['xla']['cpu']:.2f};  xla/xla+stream: train wall "
          f"{median['xla']['wall'] / median['xla+stream']['wall']:.2f}  "
          f"CPU {median['xla']['cpu'] / median['xla+stream']['cpu']:.2f}")
    if args.parallel:
        side_by_side(model_name, steps, args, train_x, train_y, info, config, flops)


def side_by_side(model_name, steps, args, train_x, train_y, info, config, flops):
    """Per-network step time of N runs trained in lockstep by one TrainerGroup (--parallel_runs=N),
    XLA on where the model compiles, each member with its own model, optimizer and (resident) data stream."""
    from tf_lottery.training.loop import TrainerGroup  # pylint: disable=import-outside-toplevel

    input_shape = SHAPES.get(model_name, (32, 32, 3))
    for count in [int(n) for n in args.parallel.split(",")]:
        trainers = [Trainer(tf.distribute.get_strategy(), models.build(model_name, input_shape, 10, seed=i),
                            config.training, args.batch_size, jit_compile=True) for i in range(count)]
        resident = pipeline.resident_training_data(train_x, train_y, info)
        iterators = [pipeline.ResidentStream.create(*resident, args.batch_size, seed=i) for i in range(count)]
        group = TrainerGroup(trainers)
        group.train(iterators, min(steps, args.chunk))  # trace and compile outside the timing
        walls = []
        for _ in range(args.repeats):
            wall = time.perf_counter()
            for chunk in chunks(steps, args.chunk):
                group.train(iterators, chunk)
            walls.append((time.perf_counter() - wall) / steps / count * 1e3)
        wall = statistics.median(walls)
        print(f"  N={count:<3d} side by side (XLA {'on' if trainers[0].jit_compile else 'off'})  "
              f"{wall:7.3f} ms per network step  {flops / wall / 1e6:6.1f} GFLOP/s in all", flush=True)


def flagfile_config(path, **overrides) -> ExperimentConfig:
    values = absl_flags.FlagValues()
    flags_lib.define_flags(values)
    values(["throughput", f"--flagfile={path}"])
    return flags_lib.config_from_flags(values).replace(**overrides)


def level(args):
    """Wall seconds of one dense level of --flagfile evaluated every 100 iterations, and the share of
    it spent evaluating (timed around each evaluation), with test read at every evaluation or sparsely."""
    import tempfile  # pylint: disable=import-outside-toplevel
    from tf_lottery.experiment import files  # pylint: disable=import-outside-toplevel
    from tf_lottery.training.run import InitialWeights, RunSpec, train  # pylint: disable=import-outside-toplevel
    from tf_lottery.training.workbench import Workbench, fresh_weights  # pylint: disable=import-outside-toplevel

    base = flagfile_config(args.flagfile, progress=False)
    iterations = args.level_iterations or base.training.iterations
    with tempfile.TemporaryDirectory() as root, Workbench(None, root) as bench:
        for test_every in (0, args.test_every):
            config = base.replace(iterations=iterations, checkpoint_every=iterations, eval_every=100,
                                  test_every=test_every)
            trainer = bench.trainer(config)
            theta = os.path.join(root, "theta.npz")
            if not os.path.exists(theta):
                files.write_weights(theta, *fresh_weights(config, bench.splits(config).info, seed=0))
            spec = RunSpec(directory=os.path.join(root, f"test_every_{test_every}"), config=config, replicate=0,
                           level=0, name="dense", masks=masks.ones_like_model(trainer.model),
                           init=InitialWeights.from_file(theta, "theta_0"))
            evaluating = {"seconds": 0.0, "calls": 0}
            evaluate = trainer.evaluate

            def timed(split, evaluate=evaluate, evaluating=evaluating):
                started = time.perf_counter()
                try:
                    return evaluate(split)
                finally:
                    evaluating["seconds"] += time.perf_counter() - started
                    evaluating["calls"] += 1

            trainer.evaluate = timed
            try:
                started = time.perf_counter()
                result = train(spec, bench)
                wall = time.perf_counter() - started
            finally:
                del trainer.evaluate
            training = wall - evaluating["seconds"]
            print(f"  eval every 100, test {'every 100' if not test_every else f'every {test_every}'}: "
                  f"{wall:6.1f} s wall, {evaluating['seconds']:5.1f} s in {evaluating['calls']} split evaluations "
                  f"= {evaluating['seconds'] / training:.0%} of the {training:.1f} s of training "
                  f"(XLA {'on' if trainer.jit_compile else 'off'}; early stop {result['early_stop_iteration']}, "
                  f"test {result['early_stop_test_accuracy']:.4f})", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet300_100,conv2")
    parser.add_argument("--batch_size", type=int, default=60)
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--steps", default="2000,30", help="training steps per timed round, one per model")
    parser.add_argument("--chunk", type=int, default=100,
                        help="steps per train call, as between two evaluations (the LeNet flagfile: 100)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds, alternating which engine goes first")
    parser.add_argument("--parallel", default="1,3,8", help="N runs side by side to time (empty: none)")
    parser.add_argument("--level", action="store_true", help="also time one dense level of --flagfile")
    parser.add_argument("--flagfile", default=os.path.join(REPO, "flags", "lenet300_mnist.cfg"))
    parser.add_argument("--level_iterations", type=int, default=0, help="shorten the level (0: the flagfile's)")
    parser.add_argument("--test_every", type=int, default=1000)
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    names = [n.strip() for n in args.models.split(",")]
    steps = [int(s) for s in args.steps.split(",")]
    for name, count in zip(names, steps + steps[-1:] * (len(names) - len(steps))):
        measure(name, count, args)
    if args.level:
        print(f"one dense level of {os.path.relpath(args.flagfile, REPO)}, in this process, one after another")
        level(args)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
