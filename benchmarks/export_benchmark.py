"""File size and serving latency of the exports at several densities, measured in one process.

    python benchmarks/export_benchmark.py --models=lenet300_100,conv2 --densities=1,0.21,0.036,0.01

For each model and target density, the model is pruned with the paper's layerwise
schedule (LeNet-300-100: hidden layers 20%, output 10% a level; Conv-2: conv 10%,
fully-connected 20%, output 10%) to the level whose overall density is closest to
the target, ranking weights by the magnitude of their initial values: no training
is needed, since sizes and latencies depend on shapes and survivor counts, not on
the values. It is then exported as a dense SavedModel, a sparse SavedModel and a
float TFLite model (with the converter's sparsity optimisation), each checked
against the dense model, and every export is loaded back and timed on uint8
batches of 1 and 256: the median of --repeats calls after warm-up calls.

For Dense-only models it also times the alternative serving approach for the
sparse SavedModel, tf.sparse.sparse_dense_matmul on the stored survivors at every
call, beside the approach the export uses (dense kernels rebuilt once at load).

Prints a Markdown table; --json also writes the numbers.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import tf_lottery  # noqa: E402,F401
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from tf_lottery import data, models  # noqa: E402
from tf_lottery.config import ExperimentConfig  # noqa: E402
from tf_lottery.export import exporter, saved_model as dense_export, sparse as sparse_export  # noqa: E402
from tf_lottery.experiment.paths import ExperimentPaths  # noqa: E402
from tf_lottery.experiment.reader import Experiment  # noqa: E402
from tf_lottery.export.source import TrainedRun  # noqa: E402
from tf_lottery.pruning import constraint, masks as masks_lib, strategies  # noqa: E402

# The flagfiles' schedules (flags/lenet300_mnist.cfg, flags/conv2_cifar10.cfg) and their datasets.
SETUPS = {
    "lenet300_100": dict(dataset="mnist", shape=(28, 28, 1), mean=(0.1307,), std=(0.3081,),
                         rates=dict(prune_rate=0.2, output_prune_rate=0.1)),
    "conv2": dict(dataset="cifar10", shape=(32, 32, 3), mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                  rates=dict(prune_rate=0.2, conv_prune_rate=0.1, output_prune_rate=0.1)),
}
MAX_LEVEL = 60


def pruned_run(name: str, target: float, seed: int = 0) -> TrainedRun:
    """The model pruned by initial magnitude to the schedule level of density closest to `target`."""
    setup = SETUPS[name]
    config = ExperimentConfig.from_flat({"model": name, "dataset": setup["dataset"], **setup["rates"]})
    info = data.DatasetInfo(setup["dataset"], setup["shape"], 10, setup["mean"], setup["std"])
    model = models.build(name, setup["shape"], 10, seed=seed)
    rates = dict(strategies.weight_rates(model, config.pruning))
    groups = strategies.groups(rates, "layerwise")
    sizes = {path: int(np.prod(w.shape)) for path, w in masks_lib.prunable_values(model).items()}

    def density(level):
        return sum(strategies.expected_counts(sizes, rates, "layerwise", level).values()) / sum(sizes.values())

    level = min(range(MAX_LEVEL + 1), key=lambda lv: abs(density(lv) - target))
    run_masks = strategies.magnitude_masks(masks_lib.prunable_values(model), masks_lib.ones_like_model(model), groups, level)
    masks_lib.apply_masks(model, run_masks)
    experiment = Experiment(ExperimentPaths(f"benchmark-{name}"), config, config.flat(), info, [])
    return TrainedRun(experiment, 0, level, "imp", model, run_masks, {})


class SparseOpsServing(tf.Module):
    """The alternative: x @ W computed as (Wᵀ_sparse @ xᵀ)ᵀ with tf.sparse on every call (Dense-only models)."""

    def __init__(self, run: TrainedRun):
        super().__init__()
        network = dense_export.plain_model(run.model)
        info = run.experiment.dataset
        std = np.asarray(info.std, np.float32)
        self.scale = tf.constant(1.0 / (255.0 * std))
        self.offset = tf.constant(-np.asarray(info.mean, np.float32) / std)
        self.layers_spec, self.kernels, self.biases = [], [], []
        for layer in constraint.walk_layers(network):
            if isinstance(layer, keras.layers.Dense):
                kernel_t = layer.kernel.numpy().T
                alive = np.argwhere(kernel_t != 0)
                self.kernels.append((tf.Variable(alive.astype(np.int64)), tf.Variable(kernel_t[kernel_t != 0]),
                                     kernel_t.shape))
                self.biases.append(tf.Variable(layer.bias.numpy()))
                self.layers_spec.append(layer.activation)
        activations, kernels, biases = self.layers_spec, self.kernels, self.biases

        def logits(images):
            x = tf.cast(images, tf.float32) * self.scale + self.offset
            x = tf.reshape(x, [tf.shape(x)[0], -1])
            for (indices, values, shape), bias, activation in zip(kernels, biases, activations):
                x = tf.transpose(tf.sparse.sparse_dense_matmul(tf.SparseTensor(indices, values, shape), x, adjoint_b=True))
                x = activation(x + bias)
            return x

        self.serve = dense_export.make_serve_function(logits, dense_export.input_spec(run))


def interleaved_median_ms(calls: dict, repeats: int, warmup: int = 3) -> dict:
    """Median milliseconds of each call, timed in rounds of one call each.

    Interleaving spreads any change in the machine's load evenly over the formats
    compared, which back-to-back blocks of calls would not.
    """
    times = {name: [] for name in calls}
    for round_index in range(warmup + repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def saved_model_call(path: str, images):
    serve = tf.saved_model.load(path).signatures[dense_export.SIGNATURE]
    return lambda: serve(images=images)["logits"].numpy()


def measure(name: str, target: float, workdir: str, repeats, sparse_ops: bool) -> dict:
    run = pruned_run(name, target)
    metadata = run.metadata()
    directory = os.path.join(workdir, f"{name}-{target}")
    paths = {f: os.path.join(directory, exporter.FILE_NAMES[f]) for f in ("saved_model", "sparse_saved_model", "tflite")}
    dense_export.export_saved_model(run, paths["saved_model"], metadata)
    encodings = sparse_export.export_sparse_saved_model(run, paths["sparse_saved_model"], metadata)
    serving = dense_export.serving_model(run)
    check = exporter.check_images(run, 64)
    reference = serving(check, training=False).numpy()
    exporter._check_saved_model(paths["sparse_saved_model"], check, reference, "sparse SavedModel")  # pylint: disable=protected-access
    tflite_report = exporter.export_tflite(run, serving, paths["tflite"], check, "none", 1)
    rng = np.random.default_rng(0)
    batches = [tf.constant(rng.integers(0, 256, (b, *run.experiment.dataset.input_shape), dtype=np.uint8)) for b in (1, 256)]
    row = {
        "model": name, "target_density": target, "level": run.level, "density": run.density,
        "encodings": encodings, "tflite_max_abs_diff": tflite_report["max_abs_diff"],
        "bytes": {"saved_model": dense_export.directory_bytes(paths["saved_model"]),
                  "sparse_saved_model": dense_export.directory_bytes(paths["sparse_saved_model"]),
                  "tflite": os.path.getsize(paths["tflite"])},
        "variables_bytes": {"saved_model": dense_export.directory_bytes(paths["saved_model"], "variables"),
                            "sparse_saved_model": dense_export.directory_bytes(paths["sparse_saved_model"], "variables")},
    }
    from tf_lottery.export import tflite  # pylint: disable=import-outside-toplevel

    runner = tflite.Runner(paths["tflite"])
    if sparse_ops:
        module = SparseOpsServing(run)
        paths["sparse_ops"] = os.path.join(directory, "sparse_ops_saved_model")
        tf.saved_model.save(module, paths["sparse_ops"], signatures={dense_export.SIGNATURE: module.serve.get_concrete_function()})
        exporter._check_saved_model(paths["sparse_ops"], check, reference, "tf.sparse serving")  # pylint: disable=protected-access
    row["ms"] = {}
    for images in batches:
        calls = {name: saved_model_call(paths[name], images)
                 for name in ("saved_model", "sparse_saved_model", "sparse_ops") if name in paths}
        calls["tflite"] = lambda images=images.numpy(): runner(images)
        for name, ms in interleaved_median_ms(calls, repeats(len(images))).items():
            row["ms"].setdefault(name, {})[len(images)] = ms
    row["tflite_delegate"] = runner.delegate
    return row


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def markdown(rows) -> str:
    lines = [
        "| model | density (level) | dense SavedModel | sparse SavedModel (variables vs dense) | TFLite "
        "| dense ms b1 / b256 | sparse ms b1 / b256 | TFLite ms b1 / b256 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["variables_bytes"]["sparse_saved_model"] / r["variables_bytes"]["saved_model"]
        ms = r["ms"]
        lines.append(
            f"| {r['model']} | {r['density']:.2%} ({r['level']}) | {_size(r['bytes']['saved_model'])} "
            f"| {_size(r['bytes']['sparse_saved_model'])} ({ratio:.1%}) | {_size(r['bytes']['tflite'])} "
            + " ".join(f"| {ms[k][1]:.2f} / {ms[k][256]:.1f}" for k in ("saved_model", "sparse_saved_model", "tflite"))
            + " |")
    alternative = [r for r in rows if "sparse_ops" in r["ms"]]
    if alternative:
        lines += ["", "| model | density | rebuilt at load ms b1 / b256 | tf.sparse every call ms b1 / b256 |", "|---|---|---|---|"]
        for r in alternative:
            lines.append(f"| {r['model']} | {r['density']:.2%} | {r['ms']['sparse_saved_model'][1]:.2f} / "
                         f"{r['ms']['sparse_saved_model'][256]:.1f} | {r['ms']['sparse_ops'][1]:.2f} / {r['ms']['sparse_ops'][256]:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet300_100,conv2")
    parser.add_argument("--densities", default="1,0.21,0.036,0.01")
    parser.add_argument("--repeats", type=int, default=200, help="Timed calls at batch 1 (batch 256: a tenth, at least 10).")
    parser.add_argument("--workdir", default="", help="Where the exports are written (default: a temporary folder).")
    parser.add_argument("--json", default="", help="Also write the measurements to this JSON file.")
    args = parser.parse_args()
    repeats = lambda batch: args.repeats if batch == 1 else max(10, args.repeats // 10)  # noqa: E731
    workdir = args.workdir or tempfile.mkdtemp(prefix="export_benchmark_")
    load_before = os.getloadavg()
    started = time.time()
    rows = []
    for name in args.models.split(","):
        for target in (float(d) for d in args.densities.split(",")):
            rows.append(measure(name, target, workdir, repeats, sparse_ops=name == "lenet300_100"))
            print(f"measured {name} at {rows[-1]['density']:.2%}", file=sys.stderr, flush=True)
    environment = {
        "tensorflow": tf.__version__, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "seconds": round(time.time() - started, 1), "command": " ".join(sys.argv),
    }
    print(markdown(rows))
    print(f"\nTensorFlow {environment['tensorflow']}, {environment['cpus']} CPUs, load average "
          f"{load_before[0]:.1f} -> {environment['load_average_after'][0]:.1f}, {environment['seconds']} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": environment, "rows": rows}, f, indent=2, default=str)


if __name__ == "__main__":
    main()
