"""What a structured ticket buys at serving time: file size and latency beside the dense model and an unstructured ticket.

    python benchmarks/structured.py --models=lenet300_100,conv2 --densities=0.5,0.21,0.07

For LeNet-300-100 (MNIST shapes, 28x28x1, --pruning_structure=neurons) and Conv-2
(on 28x28x1 inputs here, to keep the run short; --pruning_structure=channels), one
process builds, at each density (fraction of prunable weights kept):
  dense         the unpruned model;
  unstructured  the same shapes with the smallest-|w| weights of each layer zeroed
                (a magnitude-like mask at that density; the SavedModel is the dense
                export, the TFLite file is converted with EXPERIMENTAL_SPARSITY);
  structured    the neurons/channels ticket: every unit group keeps the same
                fraction of its units, those of largest L1 norm, the fraction chosen
                so the weights kept are closest to the density; exported by
                tf_lottery.export.structured (a smaller dense network).
Masks are synthetic (random Glorot weights, no training): sizes and latencies depend
on shapes and survivor counts, not on trained values, so no experiment is needed.
Each is timed as a SavedModel (its serving signature, a tf.function call) and as a
TFLite model (tf.lite interpreter, XNNPACK where it accepts the model) on uint8
batches of 1 and 256: the median of interleaved calls after warm-up. The table gives
the speed-up against the dense model of the same format and batch side by side.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import tf_lottery  # noqa: E402,F401
import tensorflow as tf  # noqa: E402

from export_benchmark import interleaved_median_ms, saved_model_call  # noqa: E402
from tf_lottery import models  # noqa: E402
from tf_lottery.data import DatasetInfo  # noqa: E402
from tf_lottery.export import exporter, saved_model as dense_export, structured, tflite  # noqa: E402
from tf_lottery.pruning import masks as masks_lib, structure  # noqa: E402

SETUPS = {"lenet300_100": ("neurons", (28, 28, 1)), "conv2": ("channels", (28, 28, 1))}


def fake_run(model, run_masks, structure_name, shape):
    info = DatasetInfo("random", shape, 10, (0.5,) * shape[-1], (0.25,) * shape[-1])
    config = types.SimpleNamespace(pruning=types.SimpleNamespace(pruning_structure=structure_name, n_of_m=(2, 4)))
    return types.SimpleNamespace(model=model, masks=run_masks, experiment=types.SimpleNamespace(dataset=info, config=config))


def structured_masks(model, groups, density):
    """Every group keeps its top-L1 fraction f of units, f chosen so the kept weights are closest to `density`."""
    values, ones = masks_lib.prunable_values(model), masks_lib.ones_like_model(model)
    scores = {g.layer: np.abs(values[g.path]).reshape(-1, g.units).sum(0) for g in groups}

    def masks_at(fraction):
        kept = {}
        for g in groups:
            keep = np.zeros(g.units, bool)
            keep[np.argsort(-scores[g.layer])[:max(1, round(g.units * fraction))]] = True
            kept[g.layer] = keep
        return structure.weight_masks(groups, kept, ones)

    best = min(np.linspace(0.01, 1.0, 200), key=lambda f: abs(masks_lib.density(masks_at(f)) - density))
    return masks_at(best)


def unstructured_masks(model, density):
    """Layerwise magnitude masks keeping `density` of every prunable weight."""
    result = {}
    for path, value in masks_lib.prunable_values(model).items():
        keep = max(1, round(value.size * density))
        threshold = np.sort(np.abs(value).reshape(-1))[::-1][keep - 1]
        result[path] = (np.abs(value) >= threshold).astype(np.float32)
    return result


def build(name, structure_name, shape, run_masks):
    model = models.build(name, shape, 10, seed=0)
    if run_masks is not None:
        masks_lib.apply_masks(model, run_masks)
    return fake_run(model, run_masks or masks_lib.ones_like_model(model), structure_name, shape)


def export_variant(run, kind, directory, images):
    """Writes one variant; returns {format: path} and its density."""
    os.makedirs(directory, exist_ok=True)
    if kind == "structured":
        entry = structured.export_structured(run, os.path.join(directory, "structured"), {}, images)
        return {"saved_model": entry["saved_model"]["path"], "tflite": entry["tflite"]["path"]}
    paths = {"saved_model": os.path.join(directory, "saved_model"), "tflite": os.path.join(directory, "model.tflite")}
    dense_export.export_saved_model(run, paths["saved_model"], {})
    exporter.export_tflite(run, dense_export.serving_model(run), paths["tflite"], images, "none", 1)
    return paths


def measure(name, densities, workdir, repeats):
    structure_name, shape = SETUPS[name]
    images = np.random.default_rng(0).integers(0, 256, (32, *shape), dtype=np.uint8)
    dense = build(name, structure_name, shape, None)
    groups = structure.structure_groups(dense.model, structure_name)
    variants = {"dense": (1.0, export_variant(dense, "dense", os.path.join(workdir, name, "dense"), images))}
    for density in densities:
        for kind in ("unstructured", "structured"):
            masks = (unstructured_masks if kind == "unstructured" else
                     lambda m, d: structured_masks(m, groups, d))(dense.model, density)
            run = build(name, structure_name, shape, masks)
            label = f"{kind} {masks_lib.density(masks):.1%}"
            variants[label] = (masks_lib.density(masks), export_variant(run, kind, os.path.join(workdir, name, label), images))
        print(f"exported {name} at {density:.0%}", file=sys.stderr, flush=True)
    sizes = {label: {"saved_model": dense_export.directory_bytes(paths["saved_model"], "variables"),
                     "tflite": os.path.getsize(paths["tflite"])} for label, (_, paths) in variants.items()}
    ms = {}
    for batch in (1, 256):
        batch_images = np.random.default_rng(batch).integers(0, 256, (batch, *shape), dtype=np.uint8)
        calls = {}
        for label, (_, paths) in variants.items():
            calls[(label, "saved_model")] = saved_model_call(paths["saved_model"], tf.constant(batch_images))
            runner = tflite.Runner(paths["tflite"])
            calls[(label, "tflite")] = lambda runner=runner: runner(batch_images)
        for key, value in interleaved_median_ms(calls, repeats[name][batch], warmup=2).items():
            ms.setdefault(key[0], {}).setdefault(key[1], {})[batch] = value
    return variants, sizes, ms


def table(name, variants, sizes, ms):
    lines = [f"\n{name} ({SETUPS[name][0]} tickets); speed-up = dense ms / this ms, same format and batch",
             "| variant | SavedModel variables | TFLite file | SavedModel ms b1 / b256 | speed-up b1 / b256 "
             "| TFLite ms b1 / b256 | speed-up b1 / b256 |", "|---|---|---|---|---|---|---|"]
    base = ms["dense"]
    for label in variants:
        cells = [label, f"{sizes[label]['saved_model'] / 1e3:,.0f} kB ({sizes[label]['saved_model'] / sizes['dense']['saved_model']:.0%})",
                 f"{sizes[label]['tflite'] / 1e3:,.0f} kB ({sizes[label]['tflite'] / sizes['dense']['tflite']:.0%})"]
        for fmt in ("saved_model", "tflite"):
            t = ms[label][fmt]
            cells.append(f"{t[1]:.3f} / {t[256]:.2f}")
            cells.append(f"{base[fmt][1] / t[1]:.2f}x / {base[fmt][256] / t[256]:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet300_100,conv2")
    parser.add_argument("--densities", default="0.5,0.21,0.07")
    parser.add_argument("--repeats", type=int, default=60, help="Timed calls at batch 1 (batch 256: fewer, see below).")
    args = parser.parse_args()
    repeats = {"lenet300_100": {1: args.repeats, 256: max(5, args.repeats // 3)},
               "conv2": {1: max(5, args.repeats // 2), 256: max(3, args.repeats // 8)}}
    started, load_before = time.time(), os.getloadavg()
    output = []
    with tempfile.TemporaryDirectory(prefix="structured_benchmark_") as workdir:
        for name in args.models.split(","):
            output.append(table(name, *measure(name, [float(d) for d in args.densities.split(",")], workdir, repeats)))
    print("\n".join(output))
    print(f"\nTensorFlow {tf.__version__}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
          f"load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}, {time.time() - started:.0f} s; "
          f"command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
