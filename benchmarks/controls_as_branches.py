"""Checks that the controls run as branches give the numbers --controls gives, and records it.

    python -m tf_lottery.main --flagfile=flags/quickstart.cfg --controls=reinit,random_prune \
        --deterministic --output_dir=runs --experiment_name=quickstart_det
    python -m tf_lottery.branch --experiment_dir=runs/quickstart_det --branch=reinit --deterministic
    python -m tf_lottery.branch --experiment_dir=runs/quickstart_det --branch=random_prune --deterministic
    python benchmarks/controls_as_branches.py --experiment_dir=runs/quickstart_det \
        --output=benchmarks/results/controls_as_branches/table.md

For every (replicate, level, control) it puts the results.csv row of the control the
IMP loop trained beside the row of the same control run later by tf_lottery.branch,
and compares their final weights array by array. Reads files only (no TensorFlow).
"""

import argparse
import glob
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tf_lottery.experiment import files  # noqa: E402
from tf_lottery.experiment.reader import Experiment  # noqa: E402

COLUMNS = ("density", "final_test_accuracy", "early_stop_iteration", "early_stop_test_accuracy", "best_val_accuracy")


def compare(experiment: Experiment, control: str):
    """(rows of the comparison, whether everything is identical)."""
    loop = {(r["replicate"], r["level"]): r for r in experiment.rows() if r["variant"] == control}
    lines, identical = [], True
    for row in experiment.branch_table(control):
        key = (row["replicate"], row["level"])
        if row["variant"] != "imp" or key not in loop:
            continue
        ours = loop[key]
        same_numbers = all(row[c] == ours[c] for c in COLUMNS)
        branch_run = glob.glob(os.path.join(experiment.paths.level(*key), f"branch_{control}_{row['branch_hash']}", "imp"))[0]
        a = files.read_weights(os.path.join(branch_run, "final_weights.npz"))
        b = files.read_weights(experiment.run(*key, control).final_weights)
        difference = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
        identical &= same_numbers and difference == 0.0
        lines.append(f"| {control} | {key[0]} | {key[1]} | {ours['density'] * 100:.2f} | "
                     f"{ours['final_test_accuracy'] * 100:.2f} | {row['final_test_accuracy'] * 100:.2f} | "
                     f"{ours['early_stop_iteration']} | {row['early_stop_iteration']} | {difference:.1g} |")
    return lines, identical


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment_dir", required=True)
    parser.add_argument("--output", default=None, help="Markdown file for the table (default: print only).")
    args = parser.parse_args(argv)
    experiment = Experiment.open(args.experiment_dir)
    table = ["| control | replicate | level | remaining (%) | final test acc., --controls (%) | final test acc., branch (%) "
             "| early stop, --controls | early stop, branch | max abs. weight difference |",
             "|---|---|---|---|---|---|---|---|---|"]
    identical = True
    for control in ("reinit", "random_prune"):
        lines, same = compare(experiment, control)
        table += lines
        identical &= same and bool(lines)
    text = "\n".join(table) + f"\n\nAll identical: {'yes' if identical else 'no'}\n"
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(text)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
