"""Tables and figures of the combine_franken study from its experiment folders.

    python benchmarks/results/combine_franken/summarize.py runs   # the --output_dir of run.sh

Copies the branch tables beside this file (combine.csv, franken_split_mnist.csv,
franken_mnist_to_fashion.csv), draws the report's combine and franken figures from them,
and writes tables.md: the report's own sections (mean ± sample std over replicates).
"""

import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", ".."))

from tf_lottery import report as report_lib  # noqa: E402  pylint: disable=wrong-import-position

# (experiment, branch table, its name here, the figures to keep as name here)
SOURCES = (
    ("lenet300_mnist_combine", "combine", "combine.csv", {"combine_accuracy_vs_budget": "combine_accuracy_vs_budget.png"}),
    ("lenet300_mnist04", "franken", "franken_split_mnist.csv", {"franken_tasks": "franken_split_mnist.png"}),
    ("lenet300_mnist_combine", "franken", "franken_mnist_to_fashion.csv",
     {"franken_tasks": "franken_mnist_to_fashion.png"}),
)
SECTION = re.compile(r"^### (Tickets combined|Frankenmodels).*?(?=^#{1,3} )", re.M | re.S)


def main(runs: str):
    sections = []
    for experiment, branch, table, figures in SOURCES:
        folder = os.path.join(runs, experiment)
        shutil.copyfile(os.path.join(folder, "branches", f"{branch}.csv"), os.path.join(HERE, table))
        with tempfile.TemporaryDirectory() as scratch:
            result = report_lib.build_report([folder], scratch)
            for name, target in figures.items():
                shutil.copyfile(result["figures"][name][0], os.path.join(HERE, target))
            with open(result["markdown"]) as f:
                text = f.read()
        wanted = "Tickets combined" if branch == "combine" else "Frankenmodels"
        found = [m.group(0) for m in SECTION.finditer(text) if m.group(1) == wanted]
        sections.append(f"## {experiment}: branch {branch}\n\n" + "".join(found).split("\n", 1)[1])
    with open(os.path.join(HERE, "tables.md"), "w") as f:
        f.write("# combine_franken: the report's tables\n\nWritten by summarize.py from the study's branch tables.\n\n"
                + "\n".join(sections))
    print(open(os.path.join(HERE, "tables.md")).read())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs")
