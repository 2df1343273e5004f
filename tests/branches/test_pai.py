"""The pai branch: each method's mask at θ0 keeps exactly the parent's per-layer counts, the ablations
do what they say, every run trains once from θ0 (or a fresh init), SynFlow reads no data, a second
call trains nothing, and bad options are one line."""

import json

import numpy as np
import pytest

from branch_helpers import deterministic_parent, digest, run_branch
from tf_lottery import branches
from tf_lottery.branches.base import Cell
from tf_lottery.branches.pai import PaiOptions
from tf_lottery.experiment import files
from tf_lottery.experiment.reader import Experiment
from tf_lottery.training import run as run_lib
from tf_lottery.training.workbench import Workbench

ARGS = ("--branch=pai", "--levels=1", "--noprogress")
FIRST = ("--method=snip,grasp,synflow,magnitude_init,random",)
SECOND = ("--method=magnitude_init", "--ablation=invert,shuffle_layerwise,reinit")  # added to the same folder
RUNS = ("grasp", "magnitude_init", "magnitude_init-invert", "magnitude_init-reinit", "magnitude_init-shuffle_layerwise",
        "random", "snip", "synflow")


# Finetuning pruned levels at the schedule's last rate: pai must train the whole schedule instead.
SCHEDULE = dict(retrain="finetune", lr_values=(3e-3, 1e-3), lr_boundaries=(30,))


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    with deterministic_parent(tmp_path_factory.mktemp("pai"), **SCHEDULE) as (root, _):
        for args in (FIRST, SECOND):
            assert run_branch(f"--experiment_dir={root}", *ARGS, *args) == 0
        yield root


def run_paths(root, name):
    branch = branches.get("pai")(Experiment.open(root))
    return branch.folder(Cell(0, 1, "imp")).run(name)


def mask_of(root, name):
    return files.read_masks(run_paths(root, name).mask)


def test_every_part_is_a_row_of_one_run_trained_once(parent):
    table = Experiment.open(parent).branch_table("pai")
    assert [r["run"] for r in table] == list(RUNS)
    assert len({r["branch_hash"] for r in table}) == 1, "more parts add to the same folder"
    for row in table:
        method, _, ablation = row["run"].partition("-")
        assert (row["method"], row["ablation"]) == (method, ablation or "none")
        assert row["iterations_spent"] == row["iterations_trained"] == 60, "the mask costs no training"
        assert row["score_batches"] == 1 and row["synflow_rounds"] == 100 and row["level"] == 1
    with open(Experiment.open(parent).paths.branch_table("pai")) as f:
        header = f.readline().strip().split(",")
    assert {"method", "ablation", "iterations_spent", "final_test_accuracy"} <= set(header)


def test_each_mask_keeps_exactly_the_parents_per_layer_counts(parent):
    experiment = Experiment.open(parent)
    target = experiment.masks(0, 1, "imp")
    assert any(not np.all(m) for m in target.values())
    for name in RUNS:
        mask = mask_of(parent, name)
        result = files.read_json(run_paths(parent, name).result)
        assert {p: int(np.count_nonzero(m)) for p, m in mask.items()} == \
               {p: int(np.count_nonzero(m)) for p, m in target.items()}, name
        assert result["density"] == experiment.result(0, 1, "imp")["density"], name
    distinct = {tuple(np.flatnonzero(mask_of(parent, n)["fc1/kernel"])) for n in ("snip", "grasp", "synflow", "random")}
    assert len(distinct) == 4, "the methods choose different weights"


def test_runs_start_at_theta_0_with_the_whole_schedule_but_reinit(parent):
    experiment = Experiment.open(parent)
    whole = json.loads(json.dumps(experiment.config.flat()))
    assert files.read_json(experiment.run(0, 1, "imp").spec)["config"]["lr_values"] == [], "the parent finetunes"
    for name in RUNS:
        record = files.read_json(run_paths(parent, name).spec)
        assert record["start_iteration"] == 0 and record["config"] == whole, name
        assert record["init"]["label"] == ("fresh" if name.endswith("reinit") else "theta_0"), name
    fresh = files.read_weights(run_paths(parent, "magnitude_init-reinit").initial_weights)
    assert not np.array_equal(fresh[0], experiment.theta_init(0)[0])
    assert all(np.array_equal(mask_of(parent, "magnitude_init-reinit")[p], m)
               for p, m in mask_of(parent, "magnitude_init").items()), "reinit trains the same mask"


def test_magnitude_keeps_the_largest_theta_0_invert_the_smallest_shuffle_other_positions(parent):
    theta = dict(zip([n.split(":")[0] for n in files.read_weight_names(Experiment.open(parent).paths.theta_init(0))],
                     Experiment.open(parent).theta_init(0)))
    kept, inverted = mask_of(parent, "magnitude_init"), mask_of(parent, "magnitude_init-invert")
    shuffled = mask_of(parent, "magnitude_init-shuffle_layerwise")
    for path, mask in kept.items():
        size = np.abs(theta[path])
        assert size[mask > 0].min() >= size[mask == 0].max(), path
        assert size[inverted[path] > 0].max() <= size[inverted[path] == 0].min(), path
        assert np.count_nonzero(shuffled[path]) == np.count_nonzero(mask)
        assert not np.array_equal(shuffled[path], mask), path


class NoData:
    """A workbench that refuses to load data."""

    is_chief = True

    def splits(self, config):
        raise AssertionError("synflow read data")

    def barrier(self):
        pass


def test_synflow_reads_no_data_and_its_mask_is_the_stored_one(parent, monkeypatch):
    from tf_lottery import data  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(data, "load", NoData().splits)
    branch = branches.get("pai")(Experiment.open(parent), PaiOptions(method=("synflow",)))
    [part] = branch.parts(Cell(0, 1, "imp"))
    mask = branch.part_mask(part, NoData())
    assert all(np.array_equal(mask[p], m) for p, m in mask_of(parent, "synflow").items())


def test_snip_scores_the_first_batches_its_run_trains_on_and_gives_the_stored_mask(parent):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    branch = branches.get("pai")(Experiment.open(parent), PaiOptions(score_batches=2))
    [part] = branch.parts(Cell(0, 1, "imp"))
    [spec] = branch.runs(part)
    with Workbench(None, parent) as bench:
        mine = branch.score_batches(part, bench)
        # pylint: disable-next=protected-access
        trained = run_lib._training_input(spec, bench, 0)(tf.distribute.InputContext())
        for (images, labels), (their_images, their_labels) in zip(mine, trained.take(2)):
            np.testing.assert_array_equal(images.numpy(), their_images.numpy())
            np.testing.assert_array_equal(labels.numpy(), their_labels.numpy())
        assert len(mine) == 2
        again = branches.get("pai")(Experiment.open(parent)).part_mask(part, bench)  # score_batches=1, as stored
    assert all(np.array_equal(again[p], m) for p, m in mask_of(parent, "snip").items()), "deterministic"


def test_a_second_call_trains_nothing(parent):
    before = digest(parent)
    for args in (FIRST, SECOND):
        assert run_branch(f"--experiment_dir={parent}", *ARGS, *args) == 0
    assert digest(parent) == before


@pytest.mark.parametrize("args, message", [
    (("--method=snip,lasso",), "--method: expected some of snip, grasp, synflow, magnitude_init, random"),
    (("--method=snip,snip",), "--method: lists a value twice"),
    (("--ablation=flip",), "--ablation: expected some of none"),
    (("--score_batches=0",), "--score_batches: must be >= 1"),
    (("--synflow_rounds=0",), "--synflow_rounds: must be >= 1"),
    (("--grasp_temperature=0",), "--grasp_temperature: must be > 0"),
    (("--variants=random_prune",), "--variants: branch pai prunes θ0 itself"),
    (("--levels=0",), "level 0 is the dense network"),
])
def test_a_bad_option_is_one_line_and_exit_2(parent, capsys, args, message):
    code = run_branch(f"--experiment_dir={parent}", "--branch=pai", "--noprogress", *args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("tf_lottery.branch: error: ") and err.count("\n") == 1, err
    assert message in err, err
