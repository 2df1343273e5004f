"""The report leads with the experiment's task's metric, on constructed experiment folders (no training):
a language model in test bits per character (lower is better), a policy in test return; the matching
rule walks in the metric's direction; experiments of different tasks are not overlaid."""

import os
import re

import numpy as np
import pytest

from conftest import small_config, write_csv
from tf_lottery import report as report_lib
from tf_lottery import tasks
from tf_lottery.experiment import results
from tf_lottery.experiment.paths import ExperimentPaths
from tf_lottery.report import __main__ as report_main
from tf_lottery.report import data, documents, figures, measures
from tf_lottery.utils import write_json

BUDGET = 300
DENSITIES = {0: 1.0, 1: 0.8, 2: 0.64, 3: 0.512}
LM_INFO = {"name": "tiny_shakespeare", "input_shape": [64], "num_classes": 65, "test_size": 871, "train_size": 15685,
           "validation_size": 871, "task": "language_model", "vocabulary": "\n abc"}
RL_INFO = {"name": "gym:CartPole-v1", "input_shape": [4], "num_classes": 2, "task": "reinforcement"}
# Early-stop test bits per character: the ticket is within 0.02 bits of the dense 2.500 at level 1 (2.515) and
# more than that above it at level 2 (2.530), so it matches down to level 1 even though level 3 is lower again;
# reinit is below (better than) the dense network at level 1 and more than 0.02 bits above it and the ticket at 2.
LM_BPC = {"imp": [2.500, 2.515, 2.530, 2.400], "reinit": [2.480, 2.560, 2.600]}
# Test return: the ticket within 25 of the dense 500 down to level 2 (480), 460 at level 3;
# random pruning 465 at level 1, more than 25 below the dense network and the ticket (495).
RL_RETURN = {"imp": [500.0, 495.0, 480.0, 460.0], "random_prune": [465.0, 450.0, 400.0]}


def _lm_row(level, variant, bpc, replicate=0):
    loss = bpc * np.log(2.0)
    return {**{c: 0 for c in results.RESULT_COLUMNS}, "replicate": replicate, "level": level, "variant": variant,
            "density": DENSITIES[level], "final_iteration": BUDGET, "early_stop_iteration": 200,
            "iterations_trained": BUDGET, "iterations_spent": BUDGET * (level + 1),
            "final_test_accuracy": 0.45, "early_stop_test_accuracy": 0.45, "best_val_accuracy": 0.46,
            "final_test_loss": loss + 0.01, "early_stop_test_loss": loss,
            "final_test_bits_per_character": bpc + 0.01, "early_stop_test_bits_per_character": bpc,
            "final_validation_bits_per_character": bpc - 0.1}


def _rl_row(level, variant, value, replicate=0, solved=70):
    return {**{c: 0 for c in results.RESULT_COLUMNS}, "replicate": replicate, "level": level, "variant": variant,
            "density": DENSITIES[level], "final_iteration": BUDGET, "early_stop_iteration": 150,
            "final_test_accuracy": float("nan"), "early_stop_test_accuracy": float("nan"),
            "final_test_return": value - 1.0, "early_stop_test_return": value, "early_stop_test_loss": -value,
            "best_validation_return": value, "solved_iteration": solved}


def _rows(make, values, **kwargs):
    """Rows from {variant: [value at level 0 (imp only) or 1, 2, ...]}."""
    rows = []
    for variant, series in values.items():
        first = 0 if variant == "imp" else 1
        rows += [make(first + i, variant, v, **kwargs) for i, v in enumerate(series)]
    return rows


def _experiment(rows, task):
    return data.Experiment("x", {"iterations": BUDGET, "levels": 3}, [], rows, [], task=tasks.get(task))



def _folder(root, name, info, rows, curves=None, **overrides):
    """An experiment folder (config.json, dataset.json of `info`, flags.cfg, results.csv with the task's
    columns) and, for each (level, variant) of `curves`, a finished run's metrics.csv of those rows."""
    folder = root / name
    config = small_config(root, experiment_name=name, levels=max(r["level"] for r in rows), iterations=BUDGET,
                          controls=tuple(sorted({r["variant"] for r in rows} - {"imp"})), **overrides)
    os.makedirs(folder)
    write_json(str(folder / "config.json"), {"hashed": config.hashed_values(), "config": config.flat()})
    write_json(str(folder / "dataset.json"), info)
    (folder / "flags.cfg").write_text(f"--dataset={info['name']}\n")
    columns = results.RESULT_COLUMNS + tuple(c for c in results.TASK_COLUMNS if c in rows[0])
    write_csv(str(folder / "results.csv"), columns, rows, extrasaction="ignore")
    for (level, variant), metrics in (curves or {}).items():
        run = ExperimentPaths(str(folder)).run(0, level, variant)
        write_csv(run.metrics, results.METRIC_FIELDS, metrics, extrasaction="ignore")
        write_json(run.result, {})
    return str(folder)


def _lm_curve(level):
    """test accuracy (0.4) and bits per character (3.0 - 0.1 * t - 0.01 * level) at t = 0, 100, 200, 300."""
    return [{"iteration": 100 * t, "split": "test", "metric": metric, "value": value} for t in range(4)
            for metric, value in (("accuracy", 0.4), ("bits_per_character", 3.0 - 0.1 * t - 0.01 * level))]


def _rl_curve(level):
    """validation return 100 * (t + 1) - level, test return 7 (read rarely) at t = 0, 1, 2."""
    return ([{"iteration": 100 * t, "split": "validation", "metric": "return", "value": 100.0 * (t + 1) - level}
             for t in range(3)] + [{"iteration": 200, "split": "test", "metric": "return", "value": 7.0}])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The report of an LM experiment and of an RL one (one replicate each, levels 0-3)."""
    root = tmp_path_factory.mktemp("tasks")
    lm = _folder(root, "lm", LM_INFO, _rows(_lm_row, LM_BPC), {(0, "imp"): _lm_curve(0), (3, "imp"): _lm_curve(3)},
                 dataset="tiny_shakespeare", model="lstm_lm", hidden_units=(), lstm_units=(32,))
    rl_rows = _rows(_rl_row, RL_RETURN)
    for row in rl_rows:
        if row["variant"] == "random_prune" and row["level"] >= 2:
            row["solved_iteration"] = -1
    rl_rows.append({**_rl_row(3, "imp", 470.0, replicate=1, solved=-1)})  # one of two replicates solved at level 3
    rl = _folder(root, "rl", RL_INFO, rl_rows, {(0, "imp"): _rl_curve(0)}, dataset="gym:CartPole-v1", replicates=2)
    out = {}
    for name, folder in (("lm", lm), ("rl", rl)):
        result = report_lib.build_report([folder], str(root / f"report_{name}"))
        with open(result["markdown"]) as f:
            out[name] = {**result, "text": f.read(), "folder": folder}
    return out


@pytest.fixture
def captured(monkeypatch):
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda figure, output_dir, name: drawn.setdefault(name, figure) and [name])
    return drawn


def _table(markdown: str, heading: str):
    """{level: {column: cell}} of the markdown table under `### heading`."""
    section = markdown.split(f"### {heading}\n", 1)[1].strip().split("\n\n", 1)[0]
    lines = [line.strip().strip("|").split("|") for line in section.splitlines()]
    header = [c.strip() for c in lines[0]]
    return {int(cells[0]): dict(zip(header, (c.strip() for c in cells))) for cells in lines[2:]}


def test_a_language_model_draws_bits_per_character_not_in_percent(captured, tmp_path):
    experiment = _experiment(_rows(_lm_row, LM_BPC), tasks.LANGUAGE_MODEL)
    figures.density_figure([experiment], "early_stop_accuracy_vs_density", str(tmp_path))
    axis = captured["early_stop_accuracy_vs_density"].axes[0]
    series = figures.plotted_series(axis)
    np.testing.assert_allclose(series["winning ticket (IMP, reset to θ0)"][1], LM_BPC["imp"])
    np.testing.assert_allclose(series["random reinitialisation"][1], [2.5] + LM_BPC["reinit"])  # from the dense run
    assert axis.get_ylabel() == "test bits per character at early stop"
    figures.density_figure([experiment], "accuracy_vs_density", str(tmp_path))
    axis = captured["accuracy_vs_density"].axes[0]
    np.testing.assert_allclose(figures.plotted_series(axis)["winning ticket (IMP, reset to θ0)"][1],
                               np.array(LM_BPC["imp"]) + 0.01)  # final_test_bits_per_character
    assert axis.get_ylabel() == "final test bits per character"


def test_a_language_model_training_curve_is_its_test_bits_per_character(built, captured, tmp_path):
    figures.training_curves_figure([data.load_experiment(built["lm"]["folder"])], str(tmp_path))
    axis = captured["training_curves"].axes[0]
    series = figures.plotted_series(axis)
    assert sorted(series) == ["100%", "51.2%"]  # the levels nearest the paper's 100% and 51.3%
    np.testing.assert_allclose(series["51.2%"][0], [0, 100, 200, 300])
    np.testing.assert_allclose(series["51.2%"][1], [2.97, 2.87, 2.77, 2.67])  # not the 0.4 accuracy, not x100
    assert axis.get_ylabel() == "test bits per character"


def test_a_language_model_table_shows_bits_per_character_and_the_loss(built):
    text = built["lm"]["text"]
    assert "Test accuracy at early stop (%)" not in text and "Final test accuracy (%)" not in text
    table = _table(text, "Test bits per character at early stop")
    assert table[0]["imp"] == "2.500" and table[2]["imp"] == "2.530" and table[1]["reinit"] == "2.480"
    assert table[0]["reinit"] == "–"
    assert _table(text, "Final test bits per character")[3]["imp"] == "2.410"
    assert _table(text, "Final validation bits per character")[1]["imp"] == "2.415"
    loss = _table(text, "Test loss at early stop (nats per character)")
    assert float(loss[0]["imp"]) == pytest.approx(2.5 * np.log(2.0), abs=1e-4)


def test_the_language_model_headline_walks_in_the_direction_of_bits_per_character(built):
    text = built["lm"]["text"]
    result = text.split("## Result\n", 1)[1].split("## Figures", 1)[0]
    assert "matches the dense network down to **80.00%** of the weights (level 1)" in result
    assert "random reinitialisation falls behind it from **64.00%** (level 2)" in result
    assert ("on the mean early-stop test bits per character (bpc; lower is better) over replicates with a tolerance "
            "of 0.020 bits per character (--bpc_tolerance)") in text
    assert ("- random reinitialisation (reinit): falls behind from **64.00%** (level 2): 2.560 bpc against the dense "
            "network's 2.500 bpc, the ticket's 2.530 bpc (more than the tolerance above the dense network and the "
            "ticket).") in text


def test_a_higher_bits_per_character_never_matches_and_a_lower_one_always_does():
    lm = tasks.LANGUAGE_MODEL
    assert data.matching_density(_experiment(_rows(_lm_row, LM_BPC), lm), "imp") == (1, 0.8)
    # 2.530 is 0.03 above the dense network: within a 0.05 tolerance, and level 3 (lower) follows
    assert data.matching_density(_experiment(_rows(_lm_row, LM_BPC), lm), "imp", tolerance=0.05) == (3, 0.512)
    better = _experiment(_rows(_lm_row, {"imp": [2.5, 2.3, 2.1, 1.9]}), lm)
    assert data.matching_density(better, "imp", tolerance=0.0) == (3, 0.512)
    worse = _experiment(_rows(_lm_row, {"imp": [2.5, 3.5, 4.5, 5.5]}), lm)  # would "match" if higher were better
    assert data.matching_density(worse, "imp") == (0, 1.0)
    # reinit better than the dense network at level 1 but more than 0.02 above the ticket there: falls behind
    fall = data.falls_below(_experiment(_rows(_lm_row, {"imp": [2.5, 2.40], "reinit": [2.45]}), lm), "reinit")
    assert (fall.level, fall.below) == (1, ("ticket",))
    keeps_up = data.falls_below(_experiment(_rows(_lm_row, {"imp": [2.5, 2.40], "reinit": [2.41]}), lm), "reinit")
    assert keeps_up.level is None and keeps_up.sparsest == (1, 0.8)


def test_a_policy_reads_in_return_with_its_tolerance():
    rl = tasks.REINFORCEMENT
    experiment = _experiment(_rows(_rl_row, RL_RETURN), rl)
    assert data.matching_density(experiment, "imp") == (2, 0.64)  # 480 >= 500 - 25 > 460
    assert data.matching_density(experiment, "imp", tolerance=50) == (3, 0.512)
    fall = data.falls_below(experiment, "random_prune")
    assert (fall.level, fall.below) == (1, ("dense network", "ticket"))  # 465 < 500 - 25 and < 495 - 25
    assert documents.headline(experiment, 25.0).endswith("random pruning falls below it from **80.00%** (level 1).")


def test_a_policy_draws_its_return_and_trains_on_its_validation_return(built, captured, tmp_path):
    experiment = data.load_experiment(built["rl"]["folder"])
    assert experiment.task.name == tasks.REINFORCEMENT
    figures.density_figure([experiment], "accuracy_vs_density", str(tmp_path))
    axis = captured["accuracy_vs_density"].axes[0]
    np.testing.assert_allclose(figures.plotted_series(axis)["random pruning"][1], [499.0, 464.0, 449.0, 399.0])
    assert axis.get_ylabel() == "final test return"
    figures.training_curves_figure([experiment], str(tmp_path))
    axis = captured["training_curves"].axes[0]
    assert figures.plotted_series(axis)["100%"] == ([0, 100, 200], [100.0, 200.0, 300.0])  # not the test's 7
    assert axis.get_ylabel() == "validation return"


def test_a_policy_table_shows_returns_and_when_each_level_solved(built):
    text = built["rl"]["text"]
    assert "accuracy (%)" not in text
    assert _table(text, "Test return at early stop (greedy policy)")[2]["imp"] == "480.0"
    assert _table(text, "Final test return (greedy policy)")[3]["imp"] == "464.0 ± 7.1"  # 459 and 469
    assert _table(text, "Best validation return (mean of the last 100 training episodes)")[1]["random_prune"] == "465.0"
    solved = _table(text, "Iteration solved")
    assert solved[1]["imp"] == "70" and solved[2]["random_prune"] == "never"
    assert solved[3]["imp"] == "70 (1 of 2 solved)" and solved[3]["replicates"] == "2/1"
    assert "with a tolerance of 25 in return (--return_tolerance)" in text


def test_experiments_of_different_tasks_are_not_overlaid(built, tmp_path, capsys):
    folders = [built["lm"]["folder"], built["rl"]["folder"]]
    with pytest.raises(report_lib.ReportError, match="cannot overlay experiments of different tasks"):
        report_lib.build_report(folders, str(tmp_path / "mixed"))
    assert not os.path.exists(tmp_path / "mixed")  # refused before anything is written
    assert report_main.main([f"--experiment_dir={f}" for f in folders] + [f"--output={tmp_path / 'mixed'}"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "lm is language_model, rl is reinforcement" in error


def test_a_tolerance_is_in_the_task_unit_and_another_task_flag_is_refused(built, tmp_path, capsys):
    lm = built["lm"]["folder"]
    assert report_main.main([f"--experiment_dir={lm}", "--tolerance=0.01", f"--output={tmp_path / 'a'}"]) == 2
    assert "--tolerance: is for classification experiments; these are language_model, whose tolerance is " \
           "--bpc_tolerance" in capsys.readouterr().err
    assert report_main.main([f"--experiment_dir={lm}", "--bpc_tolerance=0.05", f"--output={tmp_path / 'b'}"]) == 0
    with open(tmp_path / "b" / "report.md") as f:
        text = f.read()
    assert "matches the dense network down to **51.20%** of the weights (level 3" in text
    assert "tolerance of 0.050 bits per character" in text
    with pytest.raises(report_lib.ReportError, match="--bpc_tolerance: must be >= 0"):
        report_lib.build_report([lm], str(tmp_path / "c"), tolerances={tasks.LANGUAGE_MODEL: -0.1})


def test_overlaid_language_models_compare_in_bits_per_character_and_label_the_accuracy_branches(built, tmp_path):
    other = _folder(tmp_path, "lm_wider", LM_INFO, _rows(_lm_row, {"imp": [2.4, 2.41]}),
                    dataset="tiny_shakespeare", model="lstm_lm", hidden_units=(), lstm_units=(64,))
    write_csv(os.path.join(other, "branches", "combine.csv"), ("branch", "branch_hash", "replicate", "level",
               "variant", "density", "run", "how", "size", "budget_density", "test_accuracy", "nearest_test_accuracy"),
               [{"branch": "combine", "branch_hash": "ab", "replicate": 0, "level": 1, "variant": "imp", "density": 0.8,
                 "run": "imp_ensemble", "how": "ensemble", "size": 2, "budget_density": 1.6, "test_accuracy": 0.5,
                 "nearest_test_accuracy": 0.45}], extrasaction="ignore")
    result = report_lib.build_report([built["lm"]["folder"], other], str(tmp_path / "overlay"))
    with open(result["markdown"]) as f:
        text = f.read()
    methods = text.split("## Methods\n", 1)[1]
    assert "| method | level | density (%) | final test bits per character | test bits per character at early stop |" \
        in methods
    assert re.search(r"lstm_units=64: winning ticket \(IMP, reset to θ0\) \| 1 \| 80\.00 \| 2\.420 \| 2\.410 \|",
                     methods)
    combine = text.split("### Tickets combined (branch combine)\n\n", 1)[1]
    assert combine.startswith(documents.accuracy_note(measures.LANGUAGE_MODEL))
    assert "not in this experiment's test bits per character" in text.split("## Methods", 1)[0]  # the figure's caption
