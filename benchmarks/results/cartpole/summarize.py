"""Tables and a figure of the CartPole-v1 study from its results.csv (no TensorFlow, no report module).

  python benchmarks/results/cartpole/summarize.py --results=/work/runs/cartpole/results.csv [--out=DIR]

Writes to DIR (default: this folder) summary.csv and table.md: per level and variant, mean ± std
over replicates (sample std, ddof=1) of the early-stop test return (greedy policy, 20 held-out
episodes, at the iteration of best validation return), the best validation return (mean of the last
100 training episodes) and the first iteration solved (that mean >= 475; over the replicates that
solved, with how many did); and return_vs_density.png: those against density, ticket vs controls.
"""

import argparse
import csv
import math
import os
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("imp", "reinit", "random_prune")
LABELS = {"imp": "winning ticket (IMP, reset to θ0)", "reinit": "reinit (same mask, new init)",
          "random_prune": "random_prune (random mask, θ0)"}
METRICS = ("early_stop_test_return", "final_test_return", "best_validation_return")


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _stats(values):
    values = np.asarray([v for v in values if math.isfinite(v)], np.float64)
    if not len(values):
        return math.nan, math.nan, 0
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values)


def summarize(rows):
    """[{level, variant, density, replicates, <metric>_mean, <metric>_std, solved, solved_iteration_mean/std}]."""
    groups = defaultdict(list)
    for row in rows:
        groups[(int(row["level"]), row["variant"])].append(row)
    out = []
    for (level, variant), group in sorted(groups.items(), key=lambda item: (item[0][0], VARIANTS.index(item[0][1]))):
        entry = {"level": level, "variant": variant, "density": float(group[0]["density"]), "replicates": len(group)}
        for metric in METRICS:
            entry[f"{metric}_mean"], entry[f"{metric}_std"], _ = _stats(float(r[metric]) for r in group)
        solved = [float(r["solved_iteration"]) for r in group if int(float(r["solved_iteration"])) >= 0]
        entry["solved"] = len(solved)
        entry["solved_iteration_mean"], entry["solved_iteration_std"], _ = _stats(solved)
        out.append(entry)
    return out


def _pm(mean, std, digits=1):
    return "–" if not math.isfinite(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def table(summary) -> str:
    lines = ["| level | density | variant | early-stop test return | final test return | best validation return "
             "| solved at iteration (solved/replicates) |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    for e in summary:
        solved = f"{_pm(e['solved_iteration_mean'], e['solved_iteration_std'], 0)} ({e['solved']}/{e['replicates']})"
        lines.append(f"| {e['level']} | {e['density']:.1%} | {e['variant']} | "
                     f"{_pm(e['early_stop_test_return_mean'], e['early_stop_test_return_std'])} | "
                     f"{_pm(e['final_test_return_mean'], e['final_test_return_std'])} | "
                     f"{_pm(e['best_validation_return_mean'], e['best_validation_return_std'])} | {solved} |")
    return "\n".join(lines) + "\n"


def figure(summary, path):
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = (("early_stop_test_return", "early-stop test return (greedy, 20 episodes)"),
              ("best_validation_return", "best validation return (last 100 episodes)"),
              ("solved_iteration", "first iteration solved (>= 475; replicates that solved)"))
    dense = [e for e in summary if e["level"] == 0]
    for ax, (metric, title) in zip(axes, panels):
        for variant in VARIANTS:
            # Every curve starts from the dense network (level 0 has no controls).
            points = dense + [e for e in summary if e["variant"] == variant and e["level"] > 0]
            x = [100 * e["density"] for e in points]
            ax.errorbar(x, [e[f"{metric}_mean"] for e in points], yerr=[e[f"{metric}_std"] for e in points],
                        marker="o", capsize=3, label=LABELS[variant])
        ax.set_xscale("log")
        ax.set_xticks([100, 50, 30, 20, 10, 5])
        ax.set_xticklabels(["100", "50", "30", "20", "10", "5"])
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("CartPole-v1, REINFORCE, 4-64-64-2 tanh policy: mean ± std over replicates")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="/work/runs/cartpole/results.csv")
    parser.add_argument("--out", default=HERE)
    args = parser.parse_args()
    summary = summarize(read(args.results))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    text = table(summary)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text)
    figure(summary, os.path.join(args.out, "return_vs_density.png"))
    print(text, end="")


if __name__ == "__main__":
    main()
