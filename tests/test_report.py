"""The report, built from small real experiments on MNIST: figures, tables, partial runs."""

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from absl import flags

from conftest import REPO, small_config, write_csv
from tf_lottery import flags as flags_lib
from tf_lottery import report as report_lib
from tf_lottery.experiment import results
from tf_lottery.experiment.reader import Experiment
from tf_lottery.lottery import imp
from tf_lottery.report import __main__ as report_main
from tf_lottery.report import data, figures
from tf_lottery.utils import write_json

CONTROLS = ("reinit", "random_prune")


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    """Two real experiments: 2 replicates of 2 levels at rewind 0; 1 replicate of 1 level rewound to iteration 20."""
    root = tmp_path_factory.mktemp("report_runs")
    two = small_config(root, experiment_name="two", levels=2, controls=CONTROLS, replicates=2)
    one = small_config(root, experiment_name="one", levels=1, controls=CONTROLS, replicates=1, rewind_iteration=20)
    imp.run_experiment(two)
    imp.run_experiment(one)
    return {"two": str(root / "two"), "one": str(root / "one")}


@pytest.fixture(scope="module")
def built(experiments, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("report_two"))
    return report_lib.build_report([experiments["two"]], output)


def _table(markdown: str, heading: str):
    """{level: {column: cell}} of the markdown table under `### heading`."""
    section = markdown.split(f"### {heading}\n", 1)[1].strip().split("\n\n", 1)[0]
    lines = [line.strip().strip("|").split("|") for line in section.splitlines()]
    header = [c.strip() for c in lines[0]]
    return {int(cells[0]): dict(zip(header, (c.strip() for c in cells))) for cells in lines[2:]}


def _cell_numbers(cell: str):
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", cell)]


def _expected(rows, level, variant, column, scale):
    values = np.array([float(r[column]) for r in rows if int(r["level"]) == level and r["variant"] == variant])
    std = values.std(ddof=1) * scale if len(values) > 1 else None
    return values.mean() * scale, std, len(values)


def test_writes_every_figure_as_png_and_svg_and_a_self_contained_html(built):
    output = built["output"]
    for name in figures.FIGURES:
        with open(os.path.join(output, f"{name}.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        with open(os.path.join(output, f"{name}.svg")) as f:
            assert "<svg" in f.read(), name
    with open(built["html"]) as f:
        page = f.read()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(figures.FIGURES)
    assert all(s.startswith("data:image/png;base64,") for s in sources)  # nothing to fetch beside the file
    with open(built["markdown"]) as f:
        markdown = f.read()
    for name in figures.FIGURES:
        assert f"({name}.png)" in markdown


@pytest.mark.parametrize("heading,column,scale,digits", [
    ("Final test accuracy (%)", "final_test_accuracy", 100.0, 2),
    ("Test accuracy at early stop (%)", "early_stop_test_accuracy", 100.0, 2),
    ("Early-stopping iteration", "early_stop_iteration", 1.0, 0),
])
def test_tables_hold_mean_and_std_of_results_csv(built, experiments, heading, column, scale, digits):
    rows = results.read_table(os.path.join(experiments["two"], "results.csv"))
    with open(built["markdown"]) as f:
        table = _table(f.read(), heading)
    assert sorted(table) == [0, 1, 2]
    for level, cells in table.items():
        density = float(next(r["density"] for r in rows if int(r["level"]) == level))
        assert float(cells["remaining (%)"]) == pytest.approx(density * 100, abs=0.005)
        for variant in ("imp",) + CONTROLS:
            if level == 0 and variant != "imp":
                assert cells[variant] == "–"  # controls have no dense run of their own
                continue
            mean, std, count = _expected(rows, level, variant, column, scale)
            assert count == 2
            shown_mean, shown_std = _cell_numbers(cells[variant])
            assert shown_mean == pytest.approx(mean, abs=0.6 * 10 ** -digits)
            assert shown_std == pytest.approx(std, abs=0.6 * 10 ** -digits)
        assert cells["replicates"] == ("2/0/0" if level == 0 else "2/2/2")


def test_density_figure_draws_means_and_starts_controls_from_the_dense_run(experiments, monkeypatch, tmp_path):
    captured = {}
    monkeypatch.setattr(figures, "_save", lambda figure, output_dir, name: captured.setdefault(name, figure) and [name])
    experiment = data.load_experiment(experiments["two"])
    figures.density_figure([experiment], "accuracy_vs_density", str(tmp_path))
    axis = captured["accuracy_vs_density"].axes[0]
    names = {"imp": "winning ticket (IMP, reset to θ0)", "reinit": "random reinitialisation",
             "random_prune": "random pruning"}
    labelled = {line.get_label(): line for line in axis.get_lines()}
    assert set(labelled) == set(names.values())
    lines = {variant: labelled[name] for variant, name in names.items()}
    rows = results.read_table(os.path.join(experiments["two"], "results.csv"))
    dense, _, _ = _expected(rows, 0, "imp", "final_test_accuracy", 100.0)  # drawn in percent
    for variant, line in lines.items():
        x, y = line.get_xdata(), line.get_ydata()
        densities = [float(next(r["density"] for r in rows if int(r["level"]) == lv)) * 100 for lv in range(3)]
        np.testing.assert_allclose(x, densities)
        assert y[0] == pytest.approx(dense)
        for level in (1, 2):
            assert y[level] == pytest.approx(_expected(rows, level, variant, "final_test_accuracy", 100.0)[0])
    assert axis.get_xscale() == "log"
    left, right = axis.get_xlim()
    assert left > right  # from 100% on the left down to the sparsest level


def test_matching_density_stops_at_the_first_level_that_falls_behind():
    accuracies = {0: 0.980, 1: 0.982, 2: 0.976, 3: 0.970, 4: 0.981}
    rows = [{"replicate": 0, "level": lv, "variant": "imp", "density": 0.8 ** lv, "early_stop_test_accuracy": a}
            for lv, a in accuracies.items()]
    experiment = data.Experiment("x", {"levels": 4}, [], rows, [])
    assert data.matching_density(experiment, "imp", tolerance=0.005) == (2, pytest.approx(0.64))
    assert data.matching_density(experiment, "imp", tolerance=0.02) == (4, pytest.approx(0.8 ** 4))
    assert data.matching_density(data.Experiment("x", {}, [], rows[1:], []), "imp") is None


def test_one_replicate_has_no_spread_and_still_draws_everything(experiments, tmp_path):
    result = report_lib.build_report([experiments["one"]], str(tmp_path))
    assert all(result["figures"][name] for name in figures.FIGURES)
    with open(result["markdown"]) as f:
        markdown = f.read()
    table = _table(markdown, "Final test accuracy (%)")
    rows = results.read_table(os.path.join(experiments["one"], "results.csv"))
    for level in (0, 1):
        assert "±" not in table[level]["imp"]
        assert table[level]["replicates"] == ("1/0/0" if level == 0 else "1/1/1")
    assert float(table[1]["reinit"]) == pytest.approx(
        _expected(rows, 1, "reinit", "final_test_accuracy", 100.0)[0], abs=0.006)
    assert "Complete: all 4 planned runs finished" in markdown


def test_overlay_names_what_differs_between_experiments(experiments, tmp_path):
    output = str(tmp_path / "overlay")
    completed = subprocess.run(
        [sys.executable, "-m", "tf_lottery.report", f"--experiment_dir={experiments['two']}",
         f"--experiment_dir={experiments['one']}", f"--output={output}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    with open(os.path.join(output, "report.md")) as f:
        markdown = f.read()
    # Replicates and output folders differ too, but they do not change what a run computes.
    assert "`two` = rewind_iteration=0" in markdown and "`one` = rewind_iteration=20" in markdown
    with open(os.path.join(output, "accuracy_vs_density.svg")) as f:
        svg = f.read()
    assert "rewind_iteration=20: random pruning" in svg
    assert "rewind_iteration=20: winning ticket (IMP, rewound to θ20)" in svg
    assert "rewind_iteration=0: winning ticket (IMP, reset to θ0)" in svg


def _make_partial(source: str, destination: str):
    """A copy of `source` as it looks while replicate 1's last random_prune run trains."""
    shutil.copytree(source, destination)
    run = os.path.join(destination, "replicate_1", "level_02", "random_prune")
    os.remove(os.path.join(run, "result.json"))
    with open(os.path.join(run, "metrics.csv"), newline="") as f:
        kept = [r for r in csv.DictReader(f) if int(r["iteration"]) <= 40]
    with open(os.path.join(run, "metrics.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, ("iteration", "split", "metric", "value"))
        writer.writeheader()
        writer.writerows(kept)
    # More levels asked for than trained yet, as when --levels is raised to extend an experiment.
    with open(os.path.join(destination, "config.json")) as f:
        stored = json.load(f)
    stored["config"]["levels"] = 3
    with open(os.path.join(destination, "config.json"), "w") as f:
        json.dump(stored, f)
    rows = results.read_table(os.path.join(destination, "results.csv"))
    with open(os.path.join(destination, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, results.RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(r for r in rows if not (r["replicate"] == 1 and r["level"] == 2 and r["variant"] == "random_prune"))


def test_partial_experiment_shows_finished_levels_and_lists_what_is_missing(experiments, tmp_path):
    partial = str(tmp_path / "partial")
    _make_partial(experiments["two"], partial)
    result = report_lib.build_report([partial], str(tmp_path / "report"))
    assert all(result["figures"][name] for name in figures.FIGURES)
    with open(result["markdown"]) as f:
        markdown = f.read()
    assert "**Partial experiment**: 13 of 20 planned runs finished" in markdown
    assert "replicate 0, imp: level(s) 3" in markdown
    assert "replicate 1, random_prune: level(s) 2-3" in markdown
    assert "in progress: replicate 1 level 2 random_prune at iteration 40 of 60" in markdown
    table = _table(markdown, "Final test accuracy (%)")
    assert table[2]["replicates"] == "2/2/1"
    rows = results.read_table(os.path.join(partial, "results.csv"))
    only = next(float(r["final_test_accuracy"]) for r in rows
                if r["level"] == 2 and r["variant"] == "random_prune")
    assert _cell_numbers(table[2]["random_prune"]) == [pytest.approx(only * 100, abs=0.006)]


def test_experiment_with_nothing_finished_gets_a_report_that_says_so(experiments, tmp_path):
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    for name in ("config.json", "flags.cfg"):
        shutil.copy(os.path.join(experiments["two"], name), empty)
    result = report_lib.build_report([empty], str(tmp_path / "report"))
    assert not any(result["figures"].values())
    with open(result["markdown"]) as f:
        markdown = f.read()
    assert "No run has finished yet" in markdown
    assert "accuracy_vs_density: not drawn" in markdown
    assert "--model=mlp" in markdown  # the flags are still shown


def test_cli_refuses_a_folder_that_is_not_an_experiment(tmp_path, capsys):
    assert report_main.main([f"--experiment_dir={tmp_path}"]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "report")


def test_summary_uses_the_sample_standard_deviation():
    summary = data.Summary.of([0.9, 0.95, math.nan, 1.0])
    assert summary.count == 3 and summary.mean == pytest.approx(0.95)
    assert summary.std == pytest.approx(0.05) and (summary.low, summary.high) == (0.9, 1.0)


def test_the_committed_lenet_record_replays_unchanged_through_the_reader(tmp_path):
    """The recorded reproduction's results.csv, in a folder made from its flagfile,
    gives the committed report's tables and status lines, number for number."""
    record = os.path.join(REPO, "benchmarks", "results", "lenet300_mnist")
    flag_values = flags.FlagValues()
    flags_lib.define_flags(flag_values)
    flag_values(["test", f"--flagfile={os.path.join(REPO, 'flags', 'lenet300_mnist.cfg')}", "--levels=12",
                 "--replicates=2", "--controls=reinit,random_prune", "--experiment_name=lenet300_mnist",
                 "--eval_every=500", "--test_every=0"])  # as the record was made
    config = flags_lib.config_from_flags(flag_values)
    folder = tmp_path / "lenet300_mnist"
    os.makedirs(folder)
    write_json(str(folder / "config.json"), {"hashed": config.hashed_values(), "config": config.flat()})
    shutil.copy(os.path.join(record, "results.csv"), folder)
    rows = Experiment.open(str(folder)).table()
    assert len(rows) == 74 and rows[0]["early_stop_iteration"] == 4000
    result = report_lib.build_report([str(folder)], str(tmp_path / "report"))

    def body(path):  # the experiment's section, up to the flags it lists
        with open(path) as f:
            text = f.read()
        return text[text.index("## Experiment"):text.index("### Flags")]

    assert body(result["markdown"]) == body(os.path.join(record, "report.md"))
    # The status lines: the ticket's matching density, and where each control falls below the dense
    # network or the ticket.
    with open(result["markdown"]) as f:
        markdown = f.read()
    assert "Complete: all 74 planned runs finished" in markdown
    assert ("- winning ticket (IMP, reset to θ0) (imp): matches down to **6.95%** of the weights (level 12) "
            "(the sparsest finished level: it may match further down).") in markdown


# Stability: a hand-written branches/stability.csv and its curves ------------------

STABILITY_HASH, OTHER_HASH = "0123abcd", "ffff0000"
STABILITY_HEADER = (
    "branch", "branch_hash", "replicate", "level", "variant", "density", "interpolation_points", "train_eval_examples",
    "batchnorm", "batchnorm_batches", "stable_threshold", "matching_tolerance", "rewind_iteration", "pair",
    "instability_test", "instability_train", "endpoint_test_error", "max_test_error", "endpoint_train_error",
    "max_train_error", "l2_distance", "disagreement", "pruning_distance", "stable", "matching", "dense_test_accuracy",
)
STABILITY_DENSITIES = {0: 1.0, 1: 0.5, 2: 0.25, 3: 0.125}
KS = (0, 100, 500)
UNSTABLE = 0.05  # above the 2% threshold
# (variant, pair, k, level, replicate) -> (instability_test, matching), where not the default (0.005, True).
# imp: at k = 0 one replicate is unstable at levels 2 and 3 (their means, 1.85% and 1.55%, are below the 2%
# threshold: a stable mean is not enough); stable in every replicate at every level from k = 100. Level 3 never
# matches in both replicates at once, so the sparsest level stable and matching in every replicate is level 2,
# at k = 100 and 500. reinit: unstable everywhere. random_prune: stable only at level 1 for k = 500.
# imp from two initialisations: unstable.
STABILITY_CASES = {
    ("imp", "data", 0, 2, 1): (0.03, True),
    ("imp", "data", 0, 3, 0): (0.001, False),
    ("imp", "data", 100, 3, 0): (0.004, False),
    ("imp", "data", 500, 3, 1): (0.003, False),
    ("imp", "data", 0, 3, 1): (0.03, True),
}


def _stability_row(variant, pair, k, level, replicate, branch_hash=STABILITY_HASH):
    if variant == "reinit" or pair == "init":
        instability, matching = 0.1 + 0.01 * replicate, False
    elif variant == "random_prune":
        instability, matching = (0.01, True) if (level, k) == (1, 500) else (UNSTABLE + 0.01 * level, True)
    else:
        instability, matching = STABILITY_CASES.get((variant, pair, k, level, replicate), (0.005 + 0.001 * level, True))
    endpoint = 0.02 + 0.001 * level + 0.003 * replicate + 0.0001 * k / 100
    return {
        "branch": "stability", "branch_hash": branch_hash, "replicate": replicate, "level": level, "variant": variant,
        "density": STABILITY_DENSITIES[level], "interpolation_points": 5, "train_eval_examples": 1000,
        "batchnorm": "interpolate", "batchnorm_batches": 10, "stable_threshold": 0.02, "matching_tolerance": 0.005,
        "rewind_iteration": k, "pair": pair, "instability_test": instability, "instability_train": instability / 2,
        "endpoint_test_error": endpoint, "max_test_error": endpoint + instability,
        "endpoint_train_error": endpoint / 2, "max_train_error": endpoint / 2 + instability / 2,
        "l2_distance": 0.3 + 0.01 * level + 0.05 * replicate, "disagreement": 0.01 + 0.002 * replicate + 0.001 * k / 100,
        "pruning_distance": 0.5, "stable": instability < 0.02, "matching": matching, "dense_test_accuracy": 0.98,
    }


def _curve(row):
    """interpolation csv rows whose test barrier is the row's instability (its ends at the endpoint error)."""
    alphas = (0.0, 0.25, 0.5, 0.75, 1.0)
    bump = (0.0, 0.5, 1.0, 0.5, 0.0)
    return [{"alpha": a, "split": split, "error": row[f"endpoint_{split}_error"] + b * row[f"instability_{split}"],
             "loss": 0.1} for a, b in zip(alphas, bump) for split in ("test", "train")]


def _stability_experiment(root, name, ks=KS, table=True):
    """An experiment folder (config.json, flags.cfg; no IMP run) with a stability table and curves over
    2 replicates, levels 0-3, rewind points `ks`: imp, reinit and random_prune (their level 0 is the
    dense imp run, so they start at level 1) from two data orders, imp from two initialisations."""
    folder = root / name
    config = small_config(root, experiment_name=name, levels=3, replicates=2, controls=CONTROLS)
    os.makedirs(folder)
    write_json(str(folder / "config.json"), {"hashed": config.hashed_values(), "config": config.flat()})
    (folder / "flags.cfg").write_text("--model=mlp\n")
    if not table:
        return str(folder)
    rows = [_stability_row(variant, "data", k, level, replicate)
            for variant in ("imp",) + CONTROLS for k in ks for level in STABILITY_DENSITIES for replicate in (0, 1)
            if level or variant == "imp"]
    rows += [_stability_row("imp", "init", 0, level, replicate) for level in STABILITY_DENSITIES for replicate in (0, 1)]
    # Another training setting measured fewer cells: shown as present, not mixed in.
    rows += [{**_stability_row("imp", "data", 0, 2, 1, OTHER_HASH), "instability_test": 0.001, "stable": True},
             {**_stability_row("imp", "data", 0, 3, 1, OTHER_HASH), "instability_test": 0.001, "stable": True}]
    for row in rows:
        branch = folder / f"replicate_{row['replicate']}" / f"level_{row['level']:02d}" / f"branch_stability_{row['branch_hash']}"
        os.makedirs(branch, exist_ok=True)
        with open(branch / f"interpolation_{row['variant']}_{row['pair']}_k{row['rewind_iteration']}.csv", "w",
                  newline="") as f:
            writer = csv.DictWriter(f, ("alpha", "split", "error", "loss"))
            writer.writeheader()
            writer.writerows(_curve(row))
    os.makedirs(folder / "branches")
    with open(folder / "branches" / "stability.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, STABILITY_HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return str(folder)


@pytest.fixture(scope="module")
def stability_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("stability")
    result = report_lib.build_report([_stability_experiment(root, "stab")], str(root / "report"))
    with open(result["markdown"]) as f:
        result["text"] = f.read()
    return result


def _stability_table(markdown: str, heading: str):
    """{(k, level): {column: cell}} of the markdown table under `#### heading`."""
    section = markdown.split(f"#### {heading}\n", 1)[1].strip().split("\n\n", 1)[0]
    lines = [line.strip().strip("|").split("|") for line in section.splitlines()]
    header = [c.strip() for c in lines[0]]
    return {(int(cells[0]), int(cells[1])): dict(zip(header, (c.strip() for c in cells))) for cells in lines[2:]}


def test_stability_figures_are_drawn_as_png_and_svg_with_a_table(stability_report):
    output = stability_report["output"]
    for name in figures.STABILITY_FIGURES:
        assert stability_report["figures"][name], name
        with open(os.path.join(output, f"{name}.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        with open(os.path.join(output, f"{name}.svg")) as f:
            assert "<svg" in f.read(), name
        assert f"({name}.png)" in stability_report["text"]
    with open(stability_report["html"]) as f:
        assert len(re.findall(r'src="data:image/png;base64,', f.read())) == len(figures.STABILITY_FIGURES)


def test_without_the_table_the_report_has_none_of_its_figures_or_section(tmp_path):
    result = report_lib.build_report([_stability_experiment(tmp_path, "plain", table=False)], str(tmp_path / "report"))
    assert set(result["figures"]) == set(figures.FIGURES)
    assert not [n for n in os.listdir(result["output"]) if n.startswith("stability")]
    with open(result["markdown"]) as f:
        markdown = f.read()
    assert "### Stability" not in markdown
    assert not [name for name in figures.STABILITY_FIGURES if name in markdown]


def test_stability_sentences_name_the_earliest_stable_k_and_the_sparsest_stable_matching_level(stability_report):
    items = {line[2:].split(":", 1)[0]: line for line in stability_report["text"].splitlines()
             if line.startswith("- ") and "k measured" in line}
    assert set(items) == {"imp", "reinit", "random_prune", "imp, two initialisations"}
    assert "earliest k stable at every measured level: **k = 100** (k measured: 0, 100, 500; level(s) 0-3)" in items["imp"]
    assert "sparsest level stable and matching in every replicate is **25.00%** remaining (level 2, at k = 100, 500)" in items["imp"]
    assert "not stable at any measured k (k measured: 0, 100, 500; level(s) 1-3)" in items["reinit"]
    assert "no level is stable and matching in every replicate" in items["reinit"]
    assert "not stable at any measured k" in items["random_prune"]
    assert "**50.00%** remaining (level 1, at k = 500)" in items["random_prune"]
    assert "not stable at any measured k (k measured: 0; level(s) 0-3)" in items["imp, two initialisations"]


def test_stability_section_names_its_settings_and_the_rows_it_leaves_out(stability_report):
    text = stability_report["text"].split("### Stability\n", 1)[1]
    assert "below 2%" in text and "at most 0.5 percentage points below" in text
    assert f"`{STABILITY_HASH}`: 5 interpolation points, BatchNorm statistics: interpolate" in text
    assert f"`{OTHER_HASH}` (2 rows)" in text


@pytest.mark.parametrize("column,title,scale,digits", [
    ("instability_test", "instability, test (%)", 100.0, 2),
    ("instability_train", "instability, train (%)", 100.0, 2),
    ("l2_distance", "L2 distance (relative)", 1.0, 3),
    ("disagreement", "disagreement (%)", 100.0, 2),
    ("endpoint_test_error", "endpoint test accuracy (%)", -100.0, 2),
])
def test_stability_table_holds_mean_and_std_over_replicates(stability_report, column, title, scale, digits):
    table = _stability_table(stability_report["text"], "Stability of imp, two data orders")
    assert sorted(table) == [(k, level) for k in KS for level in STABILITY_DENSITIES]
    for (k, level), cells in table.items():
        values = np.array([_stability_row("imp", "data", k, level, r)[column] for r in (0, 1)]) * scale
        if scale < 0:  # accuracy, from the error
            values += 100.0
        shown_mean, shown_std = _cell_numbers(cells[title])
        assert shown_mean == pytest.approx(values.mean(), abs=0.6 * 10 ** -digits)
        assert shown_std == pytest.approx(values.std(ddof=1), abs=0.6 * 10 ** -digits)
        assert float(cells["remaining (%)"]) == pytest.approx(STABILITY_DENSITIES[level] * 100)
    assert table[(0, 2)]["stable"] == "1/2" and table[(0, 3)]["matching"] == "1/2"  # not the other hash's rows
    assert table[(100, 1)]["stable"] == "2/2" and table[(100, 1)]["matching"] == "2/2"


def test_stability_interpolation_averages_the_curves_over_replicates(tmp_path, monkeypatch):
    captured = {}
    monkeypatch.setattr(figures, "_save", lambda figure, output_dir, name: captured.setdefault(name, figure) and [name])
    experiment = data.load_experiment(_stability_experiment(tmp_path, "stab"))
    figures.stability_interpolation_figure([experiment], str(tmp_path))
    axes = [a for a in captured["stability_interpolation"].axes if a.get_visible()]
    assert [a.get_title() for a in axes] == [f"imp, {d * 100:.1f}% (level {lv})" for lv, d in STABILITY_DENSITIES.items()]
    lines = {line.get_label(): line for line in axes[2].get_lines()}
    assert set(lines) == {f"k = {k}" for k in KS}
    expected = np.mean([[p["error"] * 100 for p in _curve(_stability_row("imp", "data", 0, 2, r)) if p["split"] == "test"]
                        for r in (0, 1)], axis=0)
    np.testing.assert_allclose(lines["k = 0"].get_xdata(), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(lines["k = 0"].get_ydata(), expected)


def test_one_rewind_point_has_no_rewind_figure_and_says_why(tmp_path):
    result = report_lib.build_report([_stability_experiment(tmp_path, "one_k", ks=(0,))], str(tmp_path / "report"))
    assert result["figures"]["stability_vs_rewind"] is None
    assert result["figures"]["stability_interpolation"] and result["figures"]["stability_vs_density"]
    with open(result["markdown"]) as f:
        assert "stability_vs_rewind: not drawn, fewer than two rewind iterations k of the ticket were measured" in f.read()


def test_stability_reads_true_false_typed_or_not_and_keeps_the_most_common_hash():
    rows = [{"branch_hash": h, "replicate": 0, "level": 0, "rewind_iteration": 0, "stable": s, "matching": m,
             "endpoint_test_error": 0.02} for h, s, m in
            (("a", "True", False), ("b", True, "False"), ("b", "False", True), ("c", True, True))]
    shown, counts = data.select_stability(rows)
    assert counts == {"b": 2, "a": 1, "c": 1}
    assert [(r["stable"], r["matching"]) for r in shown] == [(True, False), (False, True)]
    assert shown[0]["endpoint_test_accuracy"] == pytest.approx(0.98)


def test_interpolation_levels_keep_level_0_and_the_sparsest():
    densities = {level: 0.8 ** level for level in range(13)}
    chosen = data.spread_levels(densities, 4)
    assert chosen[0] == 0 and chosen[-1] == 12 and len(chosen) == 4
    assert data.spread_levels({0: 1.0, 2: 0.25}, 4) == [0, 2]


# Transfer: a hand-written branches/transfer.csv and a compare_with experiment -------

TRANSFER_HEADER = (
    "branch", "branch_hash", "replicate", "level", "variant", "density", "output_mask", "reinit_output",
    "compare_with", "mode", "dataset", "optimizer", "learning_rate", "iterations", "output_layer", "run",
    "final_test_accuracy", "early_stop_iteration", "early_stop_test_accuracy", "best_val_accuracy",
    "final_validation_accuracy", "final_test_loss", "train_seconds",
)
DATA_HASH, OPTIMIZER_HASH = "aaaa1111", "bbbb2222"  # mnist → fashion_mnist; adam → momentum, twice the iterations
TRANSFER_DENSITIES = {0: 1.0, 1: 0.5, 2: 0.25, 3: 0.125}
# Final test accuracy on the target: base - 0.003 * level + 0.002 * replicate (means: base + 0.001 - 0.003 * level).
# Against the compare experiment's dense 91.0%, within half a point (>= 90.5%): ticket at levels 0-2, mask_only
# at level 0 only, random_ticket at none.
TRANSFER_BASE = {"ticket": 0.912, "mask_only": 0.905, "random_ticket": 0.89}
# The compare experiment's own ticket: level 1 within 1% of 50% (matched), level 2 not finished, level 3 at
# 12.5% * 1.03 (too far: left out). Its level 0 (91.0%) is the target's dense reference.
COMPARE_LEVELS = {0: (1.0, 0.91), 1: (0.5 * 1.004, 0.908), 3: (0.125 * 1.03, 0.95)}


def _transfer_accuracy(mode, level, replicate, branch_hash=DATA_HASH):
    shift = 0.0 if branch_hash == DATA_HASH else -0.1  # another setting, other numbers
    return TRANSFER_BASE[mode] - 0.003 * level + 0.002 * replicate + shift


def _transfer_row(mode, level, replicate, branch_hash=DATA_HASH, compare_with=""):
    accuracy = _transfer_accuracy(mode, level, replicate, branch_hash)
    target = (("fashion_mnist", "adam", 0.003, 60) if branch_hash == DATA_HASH else ("mnist", "momentum", 0.01, 120))
    return {
        "branch": "transfer", "branch_hash": branch_hash, "replicate": replicate, "level": level, "variant": "imp",
        "density": TRANSFER_DENSITIES[level], "output_mask": "random", "reinit_output": False,
        "compare_with": compare_with, "mode": mode, "dataset": target[0], "optimizer": target[1],
        "learning_rate": target[2], "iterations": target[3], "output_layer": "transferred", "run": f"imp_{mode}",
        "final_test_accuracy": accuracy, "early_stop_iteration": 40, "early_stop_test_accuracy": accuracy - 0.01,
        "best_val_accuracy": accuracy, "final_validation_accuracy": accuracy, "final_test_loss": 0.3,
        "train_seconds": 1.0,
    }


def _compare_row(level, replicate):
    density, accuracy = COMPARE_LEVELS[level]
    accuracy += 0.002 * (2 * replicate - 1)  # 2 replicates, ± 0.2 points around the level's mean
    return {**{c: 0 for c in results.RESULT_COLUMNS}, "replicate": replicate, "level": level, "variant": "imp",
            "density": density, "final_test_accuracy": accuracy, "early_stop_test_accuracy": accuracy}


def _compare_experiment(root, name, finished=True):
    """An experiment folder on the target, fashion_mnist (config.json, flags.cfg), with the imp rows of
    COMPARE_LEVELS in results.csv (a reinit row too, which is not its ticket), or none when not `finished`."""
    folder = root / name
    config = small_config(root, experiment_name=name, dataset="fashion_mnist", levels=3, replicates=2)
    os.makedirs(folder)
    write_json(str(folder / "config.json"), {"hashed": config.hashed_values(), "config": config.flat()})
    (folder / "flags.cfg").write_text("--dataset=fashion_mnist\n")
    rows = [_compare_row(level, r) for level in COMPARE_LEVELS for r in (0, 1)] if finished else []
    rows += [{**_compare_row(1, 0), "variant": "reinit", "final_test_accuracy": 0.5}] if finished else []
    write_csv(os.path.join(folder, "results.csv"), results.RESULT_COLUMNS, rows)
    return str(folder)


def _transfer_experiment(root, name, compare_with="", optimizer_setting=True, stability=False):
    """A source experiment (no IMP run) with a transfer table: setting DATA_HASH over 2 replicates, levels 0-3,
    ticket and mask_only at level 0 and every mode after, comparing with `compare_with`; and setting
    OPTIMIZER_HASH (1 replicate, levels 0 and 2, ticket and mask_only) comparing with a folder that is gone."""
    folder = _stability_experiment(root, name, table=stability)
    rows = [_transfer_row(mode, level, r, compare_with=compare_with) for level in TRANSFER_DENSITIES
            for mode in ("ticket", "mask_only", "random_ticket") for r in (0, 1) if level or mode != "random_ticket"]
    if optimizer_setting:
        rows += [_transfer_row(mode, level, 0, OPTIMIZER_HASH, compare_with=str(root / "gone"))
                 for level in (0, 2) for mode in ("ticket", "mask_only")]
    write_csv(os.path.join(folder, "branches", "transfer.csv"), TRANSFER_HEADER, rows)
    return folder


@pytest.fixture(scope="module")
def transfer_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    compare = _compare_experiment(root, "target")
    source = _transfer_experiment(root, "source", compare_with=compare, stability=True)
    result = report_lib.build_report([source], str(root / "report"))
    with open(result["markdown"]) as f:
        result["text"] = f.read()
    result["compare"], result["source"] = compare, source
    return result


def _section(markdown: str, heading: str) -> str:
    """The text under `heading` (a whole markdown heading line) up to the next heading."""
    return re.split(r"\n#+ ", markdown.split(f"{heading}\n", 1)[1], maxsplit=1)[0]


def _transfer_table(markdown: str, branch_hash: str):
    """{level: {column: cell}} of the table of one transfer setting."""
    heading = next(line for line in markdown.splitlines() if line.startswith("#### Transfer:") and branch_hash in line)
    lines = [line.strip().strip("|").split("|") for line in _section(markdown, heading).splitlines()
             if line.startswith("|")]
    header = [c.strip() for c in lines[0]]
    return {int(cells[0]): dict(zip(header, (c.strip() for c in cells))) for cells in lines[2:]}


def test_transfer_figure_is_drawn_as_png_and_svg_and_the_section_follows_stability(transfer_report):
    output = transfer_report["output"]
    for name in figures.TRANSFER_FIGURES:
        assert transfer_report["figures"][name], name
        with open(os.path.join(output, f"{name}.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        with open(os.path.join(output, f"{name}.svg")) as f:
            assert "<svg" in f.read(), name
        assert f"({name}.png)" in transfer_report["text"]
    with open(transfer_report["html"]) as f:
        assert len(re.findall(r'src="data:image/png;base64,', f.read())) == (
            len(figures.STABILITY_FIGURES) + len(figures.TRANSFER_FIGURES))
    text = transfer_report["text"]
    assert text.index("### Stability\n") < text.index("### Transfer\n") < text.index("### Flags\n")
    assert "Morcos et al. 2019" in _section(text, "### Transfer")


def test_transfer_table_holds_mean_and_std_over_two_replicates(transfer_report):
    table = _transfer_table(transfer_report["text"], DATA_HASH)
    assert sorted(table) == list(TRANSFER_DENSITIES)
    for level, cells in table.items():
        assert float(cells["remaining (%)"]) == pytest.approx(TRANSFER_DENSITIES[level] * 100)
        for mode in ("ticket", "mask_only", "random_ticket"):
            if level == 0 and mode == "random_ticket":
                assert cells[mode] == "–"  # a random mask at full density is no mask
                continue
            values = np.array([_transfer_accuracy(mode, level, r) for r in (0, 1)]) * 100
            shown_mean, shown_std = _cell_numbers(cells[mode])
            assert shown_mean == pytest.approx(values.mean(), abs=0.006)
            assert shown_std == pytest.approx(values.std(ddof=1), abs=0.006)
        assert cells["replicates"] == ("2/2/0" if level == 0 else "2/2/2")


def test_the_target_own_ticket_stands_at_matching_densities_and_the_rest_is_a_sentence(transfer_report):
    table = _transfer_table(transfer_report["text"], DATA_HASH)
    for level in (0, 1):  # level 1: 50.2% against 50%, within 1%
        values = np.array([_compare_row(level, r)["final_test_accuracy"] for r in (0, 1)]) * 100
        assert _cell_numbers(table[level]["target's own ticket"]) == [
            pytest.approx(values.mean(), abs=0.006), pytest.approx(values.std(ddof=1), abs=0.006)]
    assert table[2]["target's own ticket"] == "–" and table[3]["target's own ticket"] == "–"
    text = _section(transfer_report["text"], next(line for line in transfer_report["text"].splitlines()
                                                  if DATA_HASH in line and line.startswith("####")))
    assert f"The target's own ticket is imp of `{transfer_report['compare']}` (fashion_mnist)" in text
    # Level 2 has not finished there; its level 3 is 3% denser than ours.
    assert "it is left out at 25.00% (level 2), 12.50% (level 3), where it has none that close." in text


def test_transfer_names_the_sparsest_level_within_tolerance_of_the_target_dense_network(transfer_report):
    text = transfer_report["text"]
    data_section = _section(text, next(line for line in text.splitlines() if DATA_HASH in line and "####" in line))
    assert ("walking from the densest, before the mean final test accuracy falls more than 0.50 percentage points "
            "below the target's dense network (91.00%, imp level 0 of compare_with)" in data_section)
    items = {line[2:].split(":", 1)[0]: line for line in data_section.splitlines() if line.startswith("- ")}
    assert "down to **25.00%** remaining (level 2)" in items["ticket"]
    assert "down to **100.00%** remaining (level 0)" in items["mask_only"]
    assert "no measured level is within that" in items["random_ticket"]
    assert "down to **50.00%** remaining (level 1)" in items["target's own ticket"]
    # Without a readable compare experiment the dense reference is the setting's own level-0 mask_only.
    other = _section(text, next(line for line in text.splitlines() if OPTIMIZER_HASH in line and "####" in line))
    dense = _transfer_accuracy("mask_only", 0, 0, OPTIMIZER_HASH) * 100
    assert f"the target's dense network ({dense:.2f}%, level 0, mask_only)" in other


def test_two_settings_give_two_groups_named_by_what_differs_from_the_source(transfer_report, monkeypatch, tmp_path):
    headings = [line for line in transfer_report["text"].splitlines() if line.startswith("#### Transfer:")]
    optimizer = "adam → momentum (learning rate 0.01), 60 → 120 iterations"
    assert headings == [f"#### Transfer: mnist → fashion_mnist ({DATA_HASH})",
                        f"#### Transfer: {optimizer} ({OPTIMIZER_HASH})"]
    other = _transfer_table(transfer_report["text"], OPTIMIZER_HASH)
    assert sorted(other) == [0, 2] and "random_ticket" not in other[0] and "target's own ticket" not in other[0]
    assert _cell_numbers(other[2]["ticket"]) == [
        pytest.approx(_transfer_accuracy("ticket", 2, 0, OPTIMIZER_HASH) * 100, abs=0.006)]
    captured = {}
    monkeypatch.setattr(figures, "_save", lambda figure, output_dir, name: captured.setdefault(name, figure) and [name])
    experiment = data.load_experiment(transfer_report["source"])
    figures.transfer_accuracy_figure([experiment], str(tmp_path))
    axes = captured["transfer_accuracy"].axes
    assert [a.get_title() for a in axes] == [
        "mnist → fashion_mnist: at the end of training", "mnist → fashion_mnist: at early stop",
        f"{optimizer}: at the end of training", f"{optimizer}: at early stop"]
    lines = {line.get_label(): line for line in axes[0].get_lines()}
    assert set(lines) == {"ticket", "mask_only", "random_ticket", "target's own ticket"}
    np.testing.assert_allclose(lines["ticket"].get_xdata(), [d * 100 for d in TRANSFER_DENSITIES.values()])
    np.testing.assert_allclose(lines["ticket"].get_ydata(),
                               [np.mean([_transfer_accuracy("ticket", lv, r) for r in (0, 1)]) * 100
                                for lv in TRANSFER_DENSITIES])
    np.testing.assert_allclose(lines["target's own ticket"].get_xdata(), [100, 50])
    early = {line.get_label(): line for line in axes[1].get_lines()}
    np.testing.assert_allclose(early["random_ticket"].get_ydata(),
                               [(np.mean([_transfer_accuracy("random_ticket", lv, r) for r in (0, 1)]) - 0.01) * 100
                                for lv in (1, 2, 3)])
    assert axes[0].get_xscale() == "log"
    assert {line.get_label() for line in axes[2].get_lines()} == {"ticket", "mask_only"}  # its compare_with is gone


@pytest.mark.parametrize("state,sentence", [
    ("gone", "The target's own ticket is left out: compare_with cannot be read ({folder} does not exist)."),
    ("unfinished", "The target's own ticket, imp of `{folder}` (fashion_mnist), is left out: it has no finished level "
                   "within 1% of these densities."),
], ids=["gone", "unfinished"])
def test_a_missing_or_unfinished_compare_experiment_is_a_sentence_not_a_failure(tmp_path, state, sentence):
    compare = str(tmp_path / "target") if state == "gone" else _compare_experiment(tmp_path, "target", finished=False)
    source = _transfer_experiment(tmp_path, "source", compare_with=compare, optimizer_setting=False)
    result = report_lib.build_report([source], str(tmp_path / "report"))
    assert result["figures"]["transfer_accuracy"]
    with open(result["markdown"]) as f:
        markdown = f.read()
    assert sentence.format(folder=compare) in markdown
    table = _transfer_table(markdown, DATA_HASH)
    assert "target's own ticket" not in table[0]
    dense = np.mean([_transfer_accuracy("mask_only", 0, r) for r in (0, 1)]) * 100
    assert f"the target's dense network ({dense:.2f}%, level 0, mask_only)" in markdown


def test_without_a_transfer_table_there_is_no_transfer_section_or_figure(tmp_path):
    result = report_lib.build_report([_stability_experiment(tmp_path, "plain", table=False)], str(tmp_path / "report"))
    assert "transfer_accuracy" not in result["figures"]
    assert not [n for n in os.listdir(result["output"]) if n.startswith("transfer")]
    with open(result["markdown"]) as f:
        markdown = f.read()
    assert "### Transfer" not in markdown and "transfer_accuracy" not in markdown


def test_transfer_settings_are_described_by_what_differs_from_the_source():
    source = {"dataset": "mnist", "optimizer": "adam", "learning_rate": 0.0012, "iterations": 3000}
    row = {"dataset": "mnist", "optimizer": "adam", "learning_rate": 0.0012, "iterations": 3000,
           "output_layer": "transferred", "output_mask": "random"}
    assert data.describe_transfer(row, source) == "the source's own settings"
    assert data.describe_transfer({**row, "learning_rate": 0.0003}, source) == "learning rate 0.0012 → 0.0003"
    assert data.describe_transfer({**row, "dataset": "fashion_mnist", "iterations": 600}, source) == (
        "mnist → fashion_mnist, 3000 → 600 iterations")
    assert data.describe_transfer({**row, "output_layer": "rebuilt", "output_mask": "dense"}, source) == (
        "output layer rebuilt (dense)")
