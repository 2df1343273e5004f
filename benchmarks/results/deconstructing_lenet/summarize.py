"""Tables of the deconstructing_lenet study from its experiment folders (mean ± sample std over replicates).

    python benchmarks/results/deconstructing_lenet/summarize.py runs   # the --output_dir of run_*.sh

Writes criteria.csv, inits.csv, pai.csv and supermask.csv beside this file and prints them as markdown.
"""

import csv
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CRITERIA = ("large_final", "magnitude_increase", "movement", "large_init_large_final", "large_final_same_sign",
            "magnitude_increase_same_sign", "large_init", "random", "small_final", "small_init")


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _summary(values):
    values = [float(v) * 100 for v in values if v not in ("", None)]
    if not values:
        return "", "", 0
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f}", f"{spread:.2f}", len(values)


def _table(rows, key, value="final_test_accuracy", density="density"):
    """{(series, level): (density %, mean, std, n)} grouped by key(row)."""
    groups = {}
    for row in rows:
        name = key(row)
        if name is not None:
            groups.setdefault((name, int(row["level"])), []).append(row)
    out = {}
    for (name, level), group in sorted(groups.items()):
        dens = statistics.mean(float(r[density]) for r in group) * 100
        out[(name, level)] = (f"{dens:.2f}",) + _summary([r[value] for r in group])
    return out


def _write(name, header, table):
    path = os.path.join(HERE, name)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for (series, level), cells in table.items():
            writer.writerow([series, level, *cells])
    print(f"\n{name}\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for (series, level), cells in table.items():
        print(f"| {series} | {level} | " + " | ".join(map(str, cells)) + " |")


def main(out):
    header = ["series", "level", "density (%)", "final test accuracy (%)", "std", "replicates"]
    criteria = []
    for criterion in CRITERIA:
        path = os.path.join(out, f"lenet300_mnist_criterion_{criterion}", "results.csv")
        if os.path.exists(path):
            criteria += [dict(r, series=criterion) for r in _read(path) if r["variant"] == "imp"]
    _write("criteria.csv", header, _table(criteria, lambda r: r["series"]))
    layerwise = os.path.join(out, "lenet300_mnist_criterion_large_final")
    glob_ = os.path.join(out, "lenet300_mnist_criterion_large_final_global")
    inits = [dict(r, init=r.get("init") or "fresh") for r in _read(os.path.join(layerwise, "branches", "reinit.csv"))]
    inits += [dict(r, init="random_prune") for r in _read(os.path.join(layerwise, "branches", "random_prune.csv"))]
    inits += [dict(r, init="ticket (θ0)") for r in _read(os.path.join(layerwise, "results.csv"))
              if r["variant"] == "imp" and r["level"] != "0"]
    _write("inits.csv", header, _table(inits, lambda r: r["init"]))
    pai = []
    for scope, root in (("global", glob_), ("layerwise", layerwise)):
        pai += [dict(r, series=f"{scope}: {r['method']}" + ("" if r["ablation"] == "none" else f", {r['ablation']}"))
                for r in _read(os.path.join(root, "branches", "pai.csv"))]
        pai += [dict(r, series=f"{scope}: random_prune (IMP's layer densities)")
                for r in _read(os.path.join(root, "branches", "random_prune.csv"))] if scope == "global" else []
        pai += [dict(r, series=f"{scope}: IMP ticket (θ0)") for r in _read(os.path.join(root, "results.csv"))
                if r["variant"] == "imp" and r["level"] != "0"]
    _write("pai.csv", header, _table(pai, lambda r: r["series"]))
    masks = _read(os.path.join(layerwise, "branches", "supermask.csv"))
    _write("supermask.csv", header, _table(masks, lambda r: f"{r['run']} ({r['weights']})"))
    learned = [r for r in masks if r["run"] == "learned"]
    _write("supermask_learned_density.csv", ["series", "level", "learned mask density (%)", "threshold test accuracy (%)",
                                             "std", "replicates"],
           _table(learned, lambda r: f"learned ({r['weights']})", value="threshold_test_accuracy",
                  density="mask_density"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs")
