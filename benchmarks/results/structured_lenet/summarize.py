"""Tables and figures of the structured_lenet study from its experiment folders.

    python benchmarks/results/structured_lenet/summarize.py runs   # the --output_dir of run.sh

For each model: per level of the structured experiment, the weight density, the units kept,
final test accuracy (mean ± sample std over replicates) of the structured ticket, its controls,
the rewound structured ticket (where run) and the unstructured ticket at the same weight density
(interpolated in log density between the unstructured experiment's levels). Writes
<model>.csv and tables.md beside this file, and the report's overlaid methods figure as
<model>_accuracy_vs_density.png.
"""

import csv
import math
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", ".."))

from tf_lottery import report as report_lib  # noqa: E402  pylint: disable=wrong-import-position

STUDIES = {  # model: (structured, rewound structured or None, unstructured)
    "lenet300_mnist": ("lenet300_mnist_neurons", "lenet300_mnist_neurons_rewind", "lenet300_mnist_unstructured"),
    "lenet5_fashion_mnist": ("lenet5_fashion_mnist_channels", None, "lenet5_fashion_mnist_unstructured"),
}


def _rows(runs, name):
    path = os.path.join(runs, name, "results.csv") if name else ""
    if not path or not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _by_level(rows, variant):
    out = {}
    for row in rows:
        if row["variant"] == variant:
            out.setdefault(int(row["level"]), []).append(row)
    return dict(sorted(out.items()))


def _stat(values):
    values = [float(v) for v in values if v not in ("", None)]
    if not values:
        return None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def _text(stat):
    return "–" if stat is None else f"{stat[0] * 100:.2f} ± {stat[1] * 100:.2f}"


def _interpolate(levels, density):
    """The unstructured ticket's mean accuracy at `density`, linear in log density between its levels."""
    points = sorted((statistics.mean(float(r["density"]) for r in rows),
                     statistics.mean(float(r["final_test_accuracy"]) for r in rows)) for rows in levels.values())
    for (d0, a0), (d1, a1) in zip(points, points[1:]):
        if d0 <= density <= d1:
            t = (math.log(density) - math.log(d0)) / (math.log(d1) - math.log(d0)) if d1 > d0 else 0.0
            return a0 + t * (a1 - a0)
    return None


def main(runs):
    sections = []
    for model, (structured, rewound, unstructured) in STUDIES.items():
        rows = _rows(runs, structured)
        if not rows:
            continue
        ticket, plain = _by_level(rows, "imp"), _by_level(_rows(runs, unstructured), "imp")
        controls = {v: _by_level(rows, v) for v in ("reinit", "random_prune")}
        rewind = _by_level(_rows(runs, rewound), "imp")
        table = []
        for level, group in ticket.items():
            density = statistics.mean(float(r["density"]) for r in group)
            same = _interpolate(plain, density)
            table.append({
                "level": level, "density": f"{density * 100:.2f}",
                "units_kept": f"{statistics.mean(float(r['units_kept'] or 1) for r in group) * 100:.1f}",
                "structured": _text(_stat(r["final_test_accuracy"] for r in group)),
                "reinit": _text(_stat(r["final_test_accuracy"] for r in controls["reinit"].get(level, []))),
                "random_prune": _text(_stat(r["final_test_accuracy"] for r in controls["random_prune"].get(level, []))),
                "structured_rewound": _text(_stat(r["final_test_accuracy"] for r in rewind.get(level, []))) if rewound else "",
                "unstructured_same_density": "–" if same is None else f"{same * 100:.2f}",
                "replicates": len(group)})
        with open(os.path.join(HERE, f"{model}.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, list(table[0]))
            writer.writeheader()
            writer.writerows(table)
        header = list(table[0])
        sections.append(f"## {model}\n\n| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
                        + "\n".join("| " + " | ".join(str(r[c]) for c in header) + " |" for r in table) + "\n")
        folders = [os.path.join(runs, n) for n in (structured, rewound, unstructured) if n and _rows(runs, n)]
        with tempfile.TemporaryDirectory() as scratch:
            result = report_lib.build_report(folders, scratch)
            figure = result["figures"].get("methods_accuracy_vs_density") or result["figures"]["accuracy_vs_density"]
            shutil.copyfile(figure[0],
                            os.path.join(HERE, f"{model}_accuracy_vs_density.png"))
    text = "# structured_lenet: tables\n\nWritten by summarize.py; final test accuracy (%), mean ± sample std.\n\n" + "\n".join(sections)
    with open(os.path.join(HERE, "tables.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs")
