"""The report's methods view: every method's networks against density and against training cost,
from results.csv and the method branches' tables (gmp, prune_during_training, retrain_ticket)."""

import os
import re

import pytest

from conftest import small_config, write_csv
from tf_lottery import report as report_lib
from tf_lottery.experiment import results
from tf_lottery.report import methods
from tf_lottery.utils import write_json

DENSITIES = {0: 1.0, 1: 0.5, 2: 0.25}
BRANCH_COLUMNS = ("branch", "branch_hash", "replicate", "level", "variant", "density", "run", "start", "criterion",
                  "then", "init", "method", "ablation", "weights", "supermask_criterion", "mask_density",
                  "final_test_accuracy", "early_stop_test_accuracy", "iterations_spent")



def _imp_row(level, replicate):
    accuracy = 0.97 + 0.01 * level + 0.002 * replicate
    return {**{c: 0 for c in results.RESULT_COLUMNS}, "replicate": replicate, "level": level, "variant": "imp",
            "density": DENSITIES[level], "final_test_accuracy": accuracy, "early_stop_test_accuracy": accuracy,
            "iterations_spent": 100 * (level + 1)}


def _branch_row(branch, level, replicate, accuracy, cost, **options):
    return {"branch": branch, "branch_hash": "abcd1234", "replicate": replicate, "level": level, "variant": "imp",
            "density": DENSITIES[level], "final_test_accuracy": accuracy, "early_stop_test_accuracy": accuracy - 0.01,
            "iterations_spent": cost, **options}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    folder = root / "source"
    config = small_config(root, experiment_name="source", levels=2, replicates=2)
    os.makedirs(folder)
    write_json(str(folder / "config.json"), {"hashed": config.hashed_values(), "config": config.flat()})
    (folder / "flags.cfg").write_text("--model=mlp\n")
    write_csv(str(folder / "results.csv"), results.RESULT_COLUMNS,
               [_imp_row(level, r) for level in DENSITIES for r in (0, 1)], extrasaction="ignore")
    gmp = [_branch_row("gmp", level, r, 0.95 + 0.004 * r, 160, start="trained", run="imp") for level in (1, 2) for r in (0, 1)]
    pdt = [_branch_row("prune_during_training", 2, 0, 0.90, 100, criterion="movement", then="reset", run="imp_pruning"),
           _branch_row("prune_during_training", 2, 0, 0.96, 200, criterion="movement", then="reset", run="imp_reset")]
    write_csv(str(folder / "branches" / "gmp.csv"), BRANCH_COLUMNS, gmp, extrasaction="ignore")
    write_csv(str(folder / "branches" / "prune_during_training.csv"), BRANCH_COLUMNS, pdt,
              extrasaction="ignore")
    reinit = [_branch_row("reinit", 2, r, 0.93, 300, init="signed_constant", run="imp") for r in (0, 1)]
    pai = [_branch_row("pai", 2, 0, 0.94, 100, method="snip", ablation="none", run="snip"),
           _branch_row("pai", 2, 0, 0.91, 100, method="snip", ablation="invert", run="snip-invert")]
    supermask = [_branch_row("supermask", 2, 0, 0.62, 100, run="untrained", weights="signed_constant",
                             supermask_criterion="large_final_same_sign", mask_density=0.25),
                 _branch_row("supermask", 0, 0, 0.95, 200, run="learned", weights="init", mask_density=0.4)]
    for name, rows in (("reinit", reinit), ("pai", pai), ("supermask", supermask)):
        write_csv(str(folder / "branches" / f"{name}.csv"), BRANCH_COLUMNS, rows, extrasaction="ignore")
    result = report_lib.build_report([str(folder)], str(root / "report"))
    with open(result["markdown"]) as f:
        result["text"] = f.read()
    return result


def _table(markdown):
    section = re.split(r"\n#+ ", markdown.split("## Methods\n", 1)[1], maxsplit=1)[0]
    lines = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    return {(cells[0], int(cells[1])): dict(zip(lines[0], cells)) for cells in lines[2:]}


def test_both_method_figures_are_drawn_and_referenced(report):
    for name in methods.FIGURES:
        assert report["figures"][name], name
        with open(os.path.join(report["output"], f"{name}.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        assert f"({name}.png)" in report["text"]


def test_the_methods_table_has_each_method_with_mean_std_and_cost(report):
    table = _table(report["text"])
    ticket = "winning ticket (IMP, reset to θ0)"  # the methods are named as in the figures' legends
    assert table[(ticket, 2)]["final test accuracy (%)"] == "99.10 ± 0.14"
    assert table[(ticket, 2)]["iterations_spent"] == "300"
    gmp = table[("gradual magnitude pruning (tfmot), from trained weights", 1)]
    assert gmp["final test accuracy (%)"] == "95.20 ± 0.28" and gmp["iterations_spent"] == "160"
    assert gmp["density (%)"] == "50.00" and gmp["replicates"] == "2"


def test_a_pruning_run_that_was_retrained_is_not_a_network_of_its_own(report):
    table = _table(report["text"])
    [pdt] = [row for key, row in table.items() if key[0].startswith("pruning during training")]
    assert pdt["method"] == "pruning during training (movement, reset)"
    assert pdt["final test accuracy (%)"] == "96.00" and pdt["iterations_spent"] == "200"


def test_survivor_inits_pruning_at_init_and_supermasks_are_methods_of_their_own(report):
    table = _table(report["text"])
    assert table[("signed constant (α·sign θ)", 2)]["final test accuracy (%)"] == "93.00 ± 0.00"
    assert table[("pruning at init: snip", 2)]["final test accuracy (%)"] == "94.00"
    assert table[("pruning at init: snip, invert", 2)]["final test accuracy (%)"] == "91.00"
    untrained = table[("untrained supermask (large_final_same_sign, signed constant)", 2)]
    assert untrained["final test accuracy (%)"] == "62.00" and untrained["density (%)"] == "25.00"
    # a learned supermask is drawn at the density of the mask it learned, not the one it searched within
    assert table[("learned supermask (θ0)", 0)]["density (%)"] == "40.00"


def test_a_lone_experiment_without_method_branches_has_no_methods_view(tmp_path):
    folder = tmp_path / "alone"
    config = small_config(tmp_path, experiment_name="alone", levels=2)
    os.makedirs(folder)
    write_json(str(folder / "config.json"), {"hashed": config.hashed_values(), "config": config.flat()})
    write_csv(str(folder / "results.csv"), results.RESULT_COLUMNS, [_imp_row(level, 0) for level in DENSITIES],
              extrasaction="ignore")
    result = report_lib.build_report([str(folder)], str(tmp_path / "report"))
    assert not any(name in result["figures"] for name in methods.FIGURES)
    with open(result["markdown"]) as f:
        assert "## Methods" not in f.read()


def test_overlaid_experiments_are_named_by_their_non_default_differences(tmp_path):
    from tf_lottery.report import data  # pylint: disable=import-outside-toplevel
    base = small_config(tmp_path).flat()
    old = {k: v for k, v in base.items() if not k.startswith("early_bird")}  # written before --early_bird existed
    made = [data.Experiment(str(tmp_path / name), config, [], [], [])
            for name, config in (("old", old), ("rewound", {**base, "retrain": "lr_rewind"}),
                                 ("bird", {**base, "early_bird": True, "early_bird_threshold": 0.02}))]
    data.label_experiments(made)
    assert [e.label for e in made] == ["retrain=reset", "retrain=lr_rewind",
                                       "early_bird=True, early_bird_threshold=0.02"]
