"""The report's combine and franken views: combinations against the single ticket of their budget,
and each Frankenmodel task beside its baselines, from hand-written branch tables."""

import os
import re

import pytest

from conftest import small_config, write_csv
from tf_lottery import report as report_lib
from tf_lottery.experiment import results
from tf_lottery.report import combinations, data
from tf_lottery.utils import write_json

DENSITIES = {0: 1.0, 1: 0.5, 2: 0.25}
COMBINE = ("branch", "branch_hash", "replicate", "level", "variant", "density", "run", "how", "size",
           "budget_density", "test_accuracy", "member_accuracy_mean", "overlap", "nearest_level",
           "nearest_test_accuracy", "runs")
FRANKEN = ("branch", "branch_hash", "replicate", "level", "variant", "density", "head", "prune_b", "tasks",
           "after_task", "task", "task_name", "run", "test_accuracy", "bit_identical", "owned_weights")



def _imp_row(level, replicate):
    return {**{c: 0 for c in results.RESULT_COLUMNS}, "replicate": replicate, "level": level, "variant": "imp",
            "density": DENSITIES[level], "final_test_accuracy": 0.97 + 0.01 * level}


def _combine_row(how, size, level, replicate, accuracy, nearest, budget):
    return {"branch": "combine", "branch_hash": "abcd1234", "replicate": replicate, "level": level, "variant": "imp",
            "density": DENSITIES[level] if how == "ensemble" else budget, "run": f"imp_{how}", "how": how, "size": size, "budget_density": budget,
            "test_accuracy": accuracy, "member_accuracy_mean": 0.97, "overlap": 0.4 if how == "union" else "",
            "nearest_level": 1, "nearest_test_accuracy": nearest}


def _franken_row(level, replicate, task, run, accuracy, owned, after=1, **extra):
    return {"branch": "franken", "branch_hash": "feed0001", "replicate": replicate, "level": level, "variant": "imp",
            "density": DENSITIES[level], "head": "separate", "prune_b": 0.0, "tasks": "", "after_task": after,
            "task": task, "task_name": ["mnist", "fashion_mnist"][task], "run": run, "test_accuracy": accuracy,
            "owned_weights": owned, **extra}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("combinations")
    folder = root / "source"
    config = small_config(root, experiment_name="source", levels=2, replicates=2)
    os.makedirs(folder)
    write_json(str(folder / "config.json"), {"hashed": config.hashed_values(), "config": config.flat()})
    (folder / "flags.cfg").write_text("--model=mlp\n")
    write_csv(str(folder / "results.csv"), results.RESULT_COLUMNS, [_imp_row(lv, r) for lv in DENSITIES for r in (0, 1)])
    combine = ([_combine_row("ensemble", 2, 2, r, 0.99, 0.98 + 0.02 * r, 0.5) for r in (0, 1)]  # beats in replicate 0 only
               + [_combine_row("union", 2, 2, r, 0.975, 0.98, 0.4) for r in (0, 1)]
               # both replicates' ensemble of 2 out of 2 replicates: one network, shown once
               + [{**_combine_row("ensemble", 2, 1, r, 0.985, 0.97, 1.0), "runs": ["a;b", "b;a"][r]} for r in (0, 1)])
    franken = [_franken_row(2, r, 0, "franken", 0.99, 25, bit_identical=True) for r in (0, 1)]
    franken += [_franken_row(2, r, 1, run, acc, owned) for r in (0, 1)
                for run, acc, owned in (("franken", 0.88, 75), ("dense_alone", 0.87, 100), ("same_budget_alone", 0.86, 75))]
    franken += [_franken_row(2, 0, 0, "franken", 0.5, 25, after=0)]  # measured before task 1: not the last model
    # a chain's third task (another setting): task 1's baselines were measured when task 1 trained
    chain = [_franken_row(1, 0, 1, "dense_alone", 0.8, 100), _franken_row(1, 0, 1, "franken", 0.7, 40),
             _franken_row(1, 0, 1, "franken", 0.75, 40, after=2), _franken_row(1, 0, 0, "franken", 0.9, 20, after=2),
             {**_franken_row(1, 0, 1, "franken", 0.85, 20, after=2), "task": 2, "task_name": "fashion_mnist"}]
    franken += [{**row, "branch_hash": "feed0002", "prune_b": 0.5, "tasks": "a,b"} for row in chain]
    write_csv(str(folder / "branches" / "combine.csv"), COMBINE, combine)
    write_csv(str(folder / "branches" / "franken.csv"), FRANKEN, franken)
    result = report_lib.build_report([str(folder)], str(root / "report"))
    with open(result["markdown"]) as f:
        result["text"] = f.read()
    result["experiment"] = data.load_experiment(str(folder))
    return result


def _section_table(markdown, heading):
    """The rows of the first table after `heading`."""
    lines = []
    for line in markdown.split(heading, 1)[1].splitlines():
        if line.startswith("|"):
            lines.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif lines:
            break
    return [dict(zip(lines[0], cells)) for cells in lines[2:]]


def test_both_figures_are_drawn_and_referenced(report):
    for name in combinations.FIGURES:
        assert report["figures"][name], name
        assert f"{name}.png" in report["text"], name


def test_combinations_are_counted_against_the_single_ticket_of_their_budget(report):
    rows = {r["combination"]: r for r in _section_table(report["text"], "### Tickets combined (branch combine)")}
    ensemble = rows["ensemble of 2 tickets (logits averaged)"]
    assert ensemble["beats"] == "1/2" and ensemble["weights spent (%)"] == "50.00"
    assert ensemble["test accuracy (%)"].startswith("99.00")
    once = [r for r in _section_table(report["text"], "### Tickets combined") if r["level"] == "1"]
    assert len(once) == 1 and once[0]["beats"] == "1/1" and once[0]["test accuracy (%)"] == "98.50"
    union = rows["union of 2 tickets' masks, retrained"]
    assert union["beats"] == "0/2" and union["overlap"] == "0.400" and union["weights spent (%)"] == "40.00"


def test_each_task_is_shown_beside_its_baselines_from_the_last_frankenmodel(report):
    rows = {r["task"]: r for r in _section_table(report["text"], "### Frankenmodels (branch franken)")}
    task_a, task_b = rows["0: mnist"], rows["1: fashion_mnist"]
    assert task_a["Frankenmodel (%)"].startswith("99.00") and task_a["task A unchanged"] == "2/2 bit-identical"
    assert task_b["Frankenmodel (%)"].startswith("88.00")
    assert task_b["dense, alone (%)"].startswith("87.00") and task_b["same weights, alone (%)"].startswith("86.00")
    assert task_b["weights owned"] == "75"


def test_ownership_shares_sum_to_the_whole_frankenmodel(report):
    rows = combinations.franken_rows(report["experiment"])
    last = [r for r in rows if r["run"] == "franken" and r["after_task"] == 1 and r["branch_hash"] == "feed0001"
            and r["replicate"] == 0]
    shares = sorted(combinations._owned_share(r, rows) for r in last)  # pylint: disable=protected-access
    assert shares == pytest.approx([0.25, 0.75])  # 100 weights: dense_alone's, the two tasks' together
    chain = [r for r in rows if r["branch_hash"] == "feed0002" and r["run"] == "franken" and r["after_task"] == 2]
    shares = sorted(combinations._owned_share(r, rows) for r in chain)  # pylint: disable=protected-access
    assert shares == pytest.approx([0.2, 0.2, 0.4])  # of dense_alone's 100 weights: 20 free


def test_a_chain_shows_each_task_in_the_last_model_beside_the_baselines_of_its_own_training(report):
    rows = combinations.franken_settings(report["experiment"])["tasks a, b; separate head, new tasks pruned by 0.5 [feed0002]"]
    table = combinations.task_table(rows)
    task_1 = table[(1, "fashion_mnist")][1]
    assert [r["test_accuracy"] for r in task_1["franken"]] == [0.75]  # in the last Frankenmodel
    assert [r["test_accuracy"] for r in task_1["dense_alone"]] == [0.8]  # measured after task 1, not again


def test_a_setting_is_named_by_its_head_and_pruning(report):
    label = next(iter(combinations.franken_settings(report["experiment"])))
    assert label == "separate head [feed0001]"
    assert re.search(r"\*\*separate head \[feed0001\]\*\*", report["text"])
