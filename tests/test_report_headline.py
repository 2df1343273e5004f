"""The report's headline, names and marks, on constructed results.csv files (no training): the ticket's
matching density and where each control falls below it, the under-trained dense warning, density ticks
at the levels that ran, accuracies in percent, readable legend names, censored early-stop iterations."""

import csv
import os

import numpy as np
import pytest

from conftest import small_config
from tf_lottery import report as report_lib
from tf_lottery.experiment import results
from tf_lottery.report import data, documents, figures, methods
from tf_lottery.utils import write_json

BUDGET = 3000
DENSITIES = {0: 1.0, 1: 0.5, 2: 0.25, 3: 0.125, 4: 0.0625}


def _row(level, variant, accuracy, replicate=0, stop=1000, final=BUDGET):
    return {**{c: 0 for c in results.RESULT_COLUMNS}, "replicate": replicate, "level": level, "variant": variant,
            "density": DENSITIES[level], "final_test_accuracy": accuracy, "early_stop_test_accuracy": accuracy,
            "early_stop_iteration": stop, "final_iteration": final, "best_val_accuracy": accuracy,
            "iterations_trained": final, "iterations_spent": final * (level + 1)}


def _rows(accuracies, **kwargs):
    """Rows from {variant: [accuracy at level 0 (imp only) or 1, 2, ...]}."""
    rows = []
    for variant, values in accuracies.items():
        first = 0 if variant == "imp" else 1
        rows += [_row(first + i, variant, a, **kwargs) for i, a in enumerate(values)]
    return rows


def _experiment(rows, **config):
    return data.Experiment("x", {"iterations": BUDGET, "levels": 4, **config}, [], rows, [])


def _folder(root, name, rows, **overrides):
    """An experiment folder (config.json, flags.cfg, results.csv) holding `rows`, for build_report."""
    folder = root / name
    config = small_config(root, experiment_name=name, levels=max(r["level"] for r in rows),
                          controls=tuple(sorted({r["variant"] for r in rows} - {"imp"})), iterations=BUDGET,
                          **overrides)
    os.makedirs(folder)
    write_json(str(folder / "config.json"), {"hashed": config.hashed_values(), "config": config.flat()})
    (folder / "flags.cfg").write_text("--model=mlp\n")
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, results.RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return str(folder)


# A weak dense network (97.0%), a ticket well above it; reinit keeps up with the dense network down to level 3
# (the old rule's "matches") but is more than half a point below the ticket from level 2; random pruning is
# more than half a point below the dense network from level 3.
WEAK_DENSE = {"imp": [0.970, 0.980, 0.981, 0.982, 0.981],
              "reinit": [0.977, 0.972, 0.968, 0.960],
              "random_prune": [0.977, 0.977, 0.962, 0.950]}
# A strong dense network: the ticket matches down to level 2 and falls behind at 3; reinit stays within half a
# point of both everywhere it ran.
MATCHING = {"imp": [0.980, 0.981, 0.9785, 0.970, 0.969],
            "reinit": [0.9805, 0.976, 0.976, 0.9755]}


def test_a_control_that_keeps_up_with_a_weak_dense_network_but_not_the_ticket_falls_below():
    experiment = _experiment(_rows(WEAK_DENSE))
    assert data.matching_density(experiment, "reinit") == (3, 0.125)  # what the dense-only rule said
    fall = data.falls_below(experiment, "reinit")
    assert (fall.level, fall.density, fall.below) == (2, 0.25, ("ticket",))
    assert fall.accuracy == pytest.approx(0.972) and fall.ticket == pytest.approx(0.981)
    prune = data.falls_below(experiment, "random_prune")
    assert (prune.level, prune.below) == (3, ("dense network", "ticket"))
    text = documents.headline(experiment, 0.005)
    assert text == ("The winning ticket (IMP, reset to θ0) matches the dense network down to **6.25%** of the "
                    "weights (level 4, the sparsest that ran: it may match further down); random "
                    "reinitialisation falls below it from **25.00%** (level 2); random pruning from **12.50%** "
                    "(level 3).")
    assert "under-trained" not in text


def test_a_control_within_tolerance_of_the_dense_network_and_the_ticket_does_not_fall_below():
    experiment = _experiment(_rows(MATCHING))
    fall = data.falls_below(experiment, "reinit")
    assert fall.level is None and fall.sparsest == (4, 0.0625)
    assert documents.headline(experiment, 0.005) == (
        "The winning ticket (IMP, reset to θ0) matches the dense network down to **25.00%** of the weights "
        "(level 2); random reinitialisation does not fall below it down to 6.25% (level 4).")
    # A tighter tolerance: the ticket no longer matches at level 2 and reinit falls below from level 2 (97.6% is
    # more than 0.1 points below the ticket's 97.85% and the dense 98.0%).
    tight = documents.headline(experiment, 0.001)
    assert "down to **50.00%** of the weights (level 1)" in tight
    assert "random reinitialisation falls below it from **25.00%** (level 2)" in tight


def test_a_ticket_that_falls_behind_at_the_first_pruned_level_is_said_so():
    experiment = _experiment(_rows({"imp": [0.98, 0.95, 0.96], "reinit": [0.94, 0.93]}))
    text = documents.headline(experiment, 0.005)
    assert text.startswith("The winning ticket (IMP, reset to θ0) does not match the dense network even at the "
                           "first pruned level (50.00%, level 1)")
    assert "random reinitialisation falls below it from **50.00%** (level 1)" in text
    assert documents.headline(_experiment(_rows({"imp": [], "reinit": [0.9]})), 0.005).startswith(
        "The dense network (level 0) has not finished")


def test_an_unfinished_control_level_ends_the_walk():
    rows = [r for r in _rows(WEAK_DENSE) if not (r["variant"] == "reinit" and r["level"] == 2)]  # level 3 falls
    fall = data.falls_below(_experiment(rows), "reinit")
    assert fall.level is None and fall.sparsest == (1, 0.5)


@pytest.mark.parametrize("stops,expected", [
    ((BUDGET,), "its early-stopping iteration is its last, 3,000 of 3,000: nothing earlier was better"),
    ((BUDGET, 2000), "its last, 3,000 of 3,000 (in 1 of 2 replicates): nothing earlier was better"),
    ((2750,), None),
], ids=["censored", "one_of_two", "not_censored"])
def test_the_headline_warns_when_the_dense_network_is_under_trained(stops, expected):
    rows = [_row(0, "imp", 0.97, replicate=r, stop=stop) for r, stop in enumerate(stops)]
    rows += [_row(level, v, 0.98, replicate=r) for r in range(len(stops)) for level in (1, 2) for v in ("imp", "reinit")]
    experiment = _experiment(rows)
    text = documents.headline(experiment, 0.005)
    assert text.startswith("The winning ticket (IMP, reset to θ0) matches the dense network down to")
    if expected is None:
        assert data.undertrained_dense(experiment) is None and "under-trained" not in text
    else:
        assert "**The dense network (level 0) is under-trained**" in text and expected in text
        assert data.undertrained_dense(experiment) == (1, len(stops), BUDGET)


def test_censored_needs_the_early_stop_at_the_final_iteration_or_the_budget_without_one():
    assert data.is_censored({"early_stop_iteration": 3000, "final_iteration": 3000})
    assert not data.is_censored({"early_stop_iteration": 2750, "final_iteration": 3000})
    assert data.is_censored({"early_stop_iteration": 500, "final_iteration": ""}, budget=500)  # an older table
    assert not data.is_censored({"early_stop_iteration": -1, "final_iteration": 3000})  # no validation loss


@pytest.mark.parametrize("config,name", [
    ({}, "winning ticket (IMP, reset to θ0)"),
    ({"rewind_iteration": 20}, "winning ticket (IMP, rewound to θ20)"),
    ({"retrain": "lr_rewind"}, "winning ticket (IMP, lr_rewind)"),
    ({"retrain": "finetune", "rewind_iteration": 500}, "winning ticket (IMP, finetune from iteration 500)"),
    ({"prune_mode": "oneshot"}, "winning ticket (one-shot, reset to θ0)"),
    ({"early_bird": True}, "Early-Bird ticket (IMP, reset to θ0)"),
])
def test_the_ticket_is_named_by_how_it_was_found_and_retrained(config, name):
    assert data.variant_name(config, "imp") == name
    assert data.variant_name(config, "reinit") == "random reinitialisation"
    assert data.variant_name(config, "random_prune") == "random pruning"


@pytest.fixture
def captured(monkeypatch):
    figures_drawn = {}
    monkeypatch.setattr(figures, "_save", lambda figure, output_dir, name: figures_drawn.setdefault(name, figure) and [name])
    return figures_drawn


def test_density_figures_are_in_percent_with_readable_names_and_ticks_at_the_densities_that_ran(captured, tmp_path):
    experiment = _experiment(_rows(WEAK_DENSE))
    figures.density_figure([experiment], "accuracy_vs_density", str(tmp_path))
    axis = captured["accuracy_vs_density"].axes[0]
    series = figures.plotted_series(axis)
    assert set(series) == {"winning ticket (IMP, reset to θ0)", "random reinitialisation", "random pruning"}
    x, y = series["random reinitialisation"]
    np.testing.assert_allclose(x, [100, 50, 25, 12.5, 6.25])
    np.testing.assert_allclose(y, [97.0, 97.7, 97.2, 96.8, 96.0])  # from the dense run, in percent
    assert [t.get_text() for t in axis.get_legend().get_texts()] == list(series)
    assert axis.get_ylabel() == "final test accuracy (%)"
    assert list(axis.xaxis.get_majorticklocs()) == [100, 50, 25, 12.5, 6.25]
    assert list(axis.xaxis.get_minorticklocs()) == []
    captured.clear()
    figures.training_curves_figure([experiment], str(tmp_path))  # no metrics.csv: titles only
    assert [a.get_title() for a in captured["training_curves"].axes if a.get_visible()] == [
        "winning ticket (IMP, reset to θ0)", "random reinitialisation", "random pruning"]


def test_density_ticks_mark_every_level_and_label_a_readable_subset():
    assert figures.density_ticks([100, 51.2, 26.2, 13.4]) == ([100, 51.2, 26.2, 13.4], [])
    assert figures.density_ticks([100, 50.0, 50.02, 25.0]) == ([100, 50.02, 25.0], [])  # one tick for two methods
    many = [100 * 0.8 ** level for level in range(21)]
    labelled, unlabelled = figures.density_ticks(many)
    assert sorted(labelled + unlabelled, reverse=True) == many
    assert len(labelled) <= figures.MAX_TICK_LABELS and labelled[0] == 100 and labelled[-1] == many[-1]


def test_overlaid_experiments_keep_their_label_before_the_readable_name(captured, tmp_path):
    one, two = _experiment(_rows(WEAK_DENSE)), _experiment(_rows(MATCHING), rewind_iteration=20)
    one.label, two.label = "rewind_iteration=0", "rewind_iteration=20"
    figures.density_figure([one, two], "early_stop_accuracy_vs_density", str(tmp_path))
    labels = set(figures.plotted_series(captured["early_stop_accuracy_vs_density"].axes[0]))
    assert "rewind_iteration=20: winning ticket (IMP, rewound to θ20)" in labels
    assert "rewind_iteration=0: random pruning" in labels and len(labels) == 5


def test_a_censored_early_stop_is_hollow_in_the_figure_and_marked_in_the_table(captured, tmp_path):
    rows = _rows(WEAK_DENSE)
    for row in rows:
        if (row["level"], row["variant"]) in ((0, "imp"), (2, "reinit")):
            row["early_stop_iteration"] = BUDGET
    experiment = _experiment(rows)
    figures.density_figure([experiment], "early_stop_iteration_vs_density", str(tmp_path))
    axis = captured["early_stop_iteration_vs_density"].axes[0]
    hollow = [line for line in axis.get_lines() if line.get_label() == "_censored"]
    assert len(hollow) == 3  # level 0 of every variant, level 2 of reinit
    reinit = next(line for line in hollow if line.get_color() == figures.VARIANT_COLORS["reinit"])
    np.testing.assert_allclose(reinit.get_xdata(), [100, 25])
    assert reinit.get_markerfacecolor() == "white"
    assert figures.CENSORED_LABEL in [t.get_text() for t in axis.get_legend().get_texts()]
    _, table = documents.results_table(experiment, "early_stop_iteration", "iteration")
    cells = {int(r[0]): r for r in table}
    assert cells[0][2] == "≥ 3000" and cells[2][3] == "≥ 3000" and cells[1][3] == "1000"
    _, accuracy = documents.results_table(experiment, "final_test_accuracy", "accuracy")
    assert not any("≥" in cell for row in accuracy for cell in row)  # only the iteration is censored
    captured.clear()
    figures.density_figure([_experiment(_rows(WEAK_DENSE))], "early_stop_iteration_vs_density", str(tmp_path))
    axis = captured["early_stop_iteration_vs_density"].axes[0]
    assert not [line for line in axis.get_lines() if line.get_label() == "_censored"]
    assert figures.CENSORED_LABEL not in [t.get_text() for t in axis.get_legend().get_texts()]


def test_the_built_report_leads_with_the_headline_and_explains_its_rule(tmp_path):
    rows = _rows(WEAK_DENSE)
    rows[0]["early_stop_iteration"] = BUDGET  # level 0, imp
    result = report_lib.build_report([_folder(tmp_path, "weak", rows)], str(tmp_path / "report"))
    with open(result["markdown"]) as f:
        markdown = f.read()
    result_section = markdown.split("## Result\n", 1)[1].split("## Figures", 1)[0]
    assert "random reinitialisation falls below it from **25.00%** (level 2)" in result_section
    assert "**The dense network (level 0) is under-trained**" in result_section
    assert ("falls below from the first level, walking from the densest pruned level, at which it is more than "
            "the tolerance below the dense network or more than the tolerance below the ticket") in markdown
    assert ("- random reinitialisation (reinit): falls below from **25.00%** (level 2): 97.20% against the dense "
            "network's 97.00%, the ticket's 98.10% (more than the tolerance below the ticket).") in markdown
    assert "Columns: imp = winning ticket (IMP, reset to θ0); reinit = random reinitialisation" in markdown
    assert documents.CENSORED_NOTE in markdown
    assert "| 0 | 100.00 | ≥ 3000 | – | – | 1/0/0 |" in markdown


def test_the_branch_methods_have_readable_names():
    base = {"branch_hash": "abcd", "replicate": 0, "level": 1, "variant": "imp", "density": 0.5,
            "final_test_accuracy": 0.97, "early_stop_test_accuracy": 0.97, "iterations_spent": 10}
    experiment = _experiment([_row(0, "imp", 0.98), _row(1, "imp", 0.98)], early_bird=True)
    experiment.branches = {
        "gmp": [{**base, "start": "trained"}, {**base, "start": "init", "branch_hash": "ef01"}],
        "prune_during_training": [{**base, "criterion": "movement", "then": "reset", "run": "imp_reset"},
                                  {**base, "criterion": "magnitude", "then": "keep", "run": "imp_pruning"}],
        "retrain_ticket": [base],
    }
    assert [m.label for m in methods.methods([experiment])] == [
        "Early-Bird ticket (IMP, reset to θ0)",
        "gradual magnitude pruning (tfmot), from trained weights", "gradual magnitude pruning (tfmot), from θ0",
        "pruning during training (movement, reset)", "pruning during training (magnitude, kept)",
        "Early-Bird ticket retrained"]
    experiment.config["early_bird"] = False
    experiment.label = "retrain=reset"
    assert methods.methods([experiment])[-1].label == "retrain=reset: ticket retrained"
