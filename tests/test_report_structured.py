"""The report's units table: shown for a structured experiment (results.csv's units_kept), not otherwise."""

import csv
import os

from conftest import small_config
from tf_lottery import report as report_lib
from tf_lottery.experiment import results
from tf_lottery.utils import write_json


def _experiment(root, name, units):
    folder = root / name
    config = small_config(root, experiment_name=name, levels=1)
    os.makedirs(folder)
    write_json(str(folder / "config.json"), {"hashed": config.hashed_values(), "config": config.flat()})
    (folder / "flags.cfg").write_text("--model=mlp\n")
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, results.RESULT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for level, kept in enumerate(units):
            writer.writerow({**{c: 0 for c in results.RESULT_COLUMNS}, "replicate": 0, "level": level, "variant": "imp",
                             "density": 0.5 ** level, "final_test_accuracy": 0.9, "units_kept": kept})
    return str(folder)


def _text(root, folder):
    result = report_lib.build_report([folder], str(root / f"report_{os.path.basename(folder)}"))
    with open(result["markdown"]) as f:
        return f.read()


def test_a_structured_experiment_reports_the_units_it_kept(tmp_path):
    text = _text(tmp_path, _experiment(tmp_path, "neurons", [1.0, 0.7]))
    table = text.split("### Units or channels kept (%)", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| 1 |")]
    assert rows and "70.00" in rows[0]


def test_an_unstructured_experiment_has_no_units_table(tmp_path):
    assert "Units or channels kept" not in _text(tmp_path, _experiment(tmp_path, "weights", ["", ""]))
