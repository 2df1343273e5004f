"""Tables and figures of the lm_tiny_shakespeare study from its experiment folders.

    python benchmarks/results/lm_tiny_shakespeare/summarize.py runs   # the --output_dir of run.sh

For each model: per level, the density, the validation bits per character at the early-stopping
iteration (its minimum), the test bits per character there and at the end of training, and the
early-stopping iteration, of the ticket and both controls (mean ± sample std over replicates).
Writes <experiment>.csv, tables.md and <experiment>_bpc_vs_density.png beside this file.
"""

import csv
import math
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402  pylint: disable=wrong-import-position
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
EXPERIMENTS = ("lstm_tiny_shakespeare", "lstm_tiny_shakespeare_rewind150", "transformer_tiny_shakespeare",
               "transformer_tiny_shakespeare_reset")
VARIANTS = ("imp", "reinit", "random_prune")
COLORS = {"imp": "tab:blue", "reinit": "tab:orange", "random_prune": "tab:green"}
METRICS = (("early_stop_validation_bits_per_character", 3), ("early_stop_test_bits_per_character", 3),
           ("final_test_bits_per_character", 3), ("early_stop_iteration", 0))


def rows_of(runs, name):
    path = os.path.join(runs, name, "results.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # results.csv keeps the validation loss in nats
        row["early_stop_validation_bits_per_character"] = float(row["early_stop_validation_loss"]) / math.log(2)
    return rows


def stat(values):
    values = [float(v) for v in values if v not in ("", None)]
    if not values:
        return None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def text(s, digits):
    return "–" if s is None else f"{s[0]:.{digits}f} ± {s[1]:.{digits}f}"


def table(rows):
    """{(level, variant): {metric: stat, 'density': mean density, 'n': replicates}}."""
    cells = {}
    for row in rows:
        cells.setdefault((int(row["level"]), row["variant"]), []).append(row)
    out = {}
    for key, group in sorted(cells.items()):
        out[key] = {m: stat(r[m] for r in group) for m, _ in METRICS}
        out[key]["density"] = statistics.mean(float(r["density"]) for r in group)
        out[key]["n"] = len(group)
    return out


def write(name, cells, lines):
    levels = sorted({level for level, _ in cells})
    with open(os.path.join(HERE, f"{name}.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["level", "density", "variant", "replicates"]
                        + [f"{m}_{part}" for m, _ in METRICS for part in ("mean", "std")])
        for (level, variant), cell in sorted(cells.items()):
            writer.writerow([level, f"{cell['density']:.6f}", variant, cell["n"]]
                            + [x for m, _ in METRICS for x in ((f"{cell[m][0]:.6f}", f"{cell[m][1]:.6f}")
                                                                if cell[m] else ("", ""))])
    lines += [f"## {name}", "",
              "| level | remaining | early-stop validation bpc imp / reinit / random_prune | early-stop test bpc "
              "imp / reinit / random_prune | final test bpc imp / reinit / random_prune | early-stop iteration "
              "imp / reinit / random_prune | replicates |",
              "|---|---|---|---|---|---|---|"]
    for level in levels:
        present = [v for v in VARIANTS if (level, v) in cells]
        density = cells[(level, present[0])]["density"]
        parts = []
        for metric, digits in METRICS:
            parts.append(" / ".join(text(cells[(level, v)][metric], digits) for v in present))
        counts = "/".join(str(cells[(level, v)]["n"]) for v in present)
        lines.append(f"| {level} | {density:.2%} | " + " | ".join(parts) + f" | {counts} |")
    lines.append("")


def figure(name, cells):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for axis, split in zip(axes, ("validation", "test")):
        metric = f"early_stop_{split}_bits_per_character"
        for variant in VARIANTS:
            keys = sorted(k for k in cells if k[1] == variant or (k[0] == 0 and k[1] == "imp"))
            keys = [k for k in keys if cells[k][metric]]
            if variant != "imp" and len(keys) <= 1:
                continue
            x = [cells[k]["density"] * 100 for k in keys]
            mean = [cells[k][metric][0] for k in keys]
            std = [cells[k][metric][1] for k in keys]
            axis.errorbar(x, mean, yerr=std, marker="o", markersize=4, capsize=3, color=COLORS[variant],
                          label=variant)
        axis.set_xscale("log")
        axis.set_xticks([100, 80, 64, 51, 41, 33, 26, 21, 17])
        axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlim(110, min(c["density"] for c in cells.values()) * 100 * 0.9)
        axis.set_xlabel("percent of weights remaining")
        axis.set_title(f"{split} bits per character at early stop")
        axis.grid(True, alpha=0.3)
    axes[0].set_ylabel("bits per character (lower is better)")
    axes[0].legend()
    fig.suptitle(f"{name}: mean ± std over replicates")
    fig.savefig(os.path.join(HERE, f"{name}_bpc_vs_density.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(runs):
    lines = ["# Tables of the lm_tiny_shakespeare study", "",
             "Bits per character (mean ± sample std over replicates); early stop = the evaluated "
             "iteration of minimum validation loss.", ""]
    for name in EXPERIMENTS:
        rows = rows_of(runs, name)
        if not rows:
            continue
        cells = table(rows)
        write(name, cells, lines)
        figure(name, cells)
        seconds = sum(float(r["train_seconds"]) for r in rows)
        lines += [f"{len(rows)} runs, {seconds / 60:.1f} min of training in all "
                  f"({seconds / len(rows):.0f} s a run on average).", ""]
    with open(os.path.join(HERE, "tables.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs")
