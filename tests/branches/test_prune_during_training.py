"""prune_during_training: exact per-layer counts, masks that only lose ones, movement picks the
weights that moved least, reset retrains from θ0 with the final mask, parts share the pruning
run, an interrupted pruning run resumes to the same mask, bad options are one line."""

import glob
import os

import numpy as np
import pytest

from branch_helpers import copy_of, deterministic_parent, digest, run_branch

from tf_lottery.branches import prune_during_training as pdt
from tf_lottery.experiment import files
from tf_lottery.experiment.reader import Experiment
from tf_lottery.pruning import gradual
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training.hooks import Hook

# 60 iterations; prunings at 10, 20 and 30; checkpoints at 20 and 40.
QUICK = ("--branch=prune_during_training", "--levels=1", "--noprogress", "--deterministic", "--prune_every=10",
         "--prune_until=30")


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished deterministic experiment, levels 0-1 (fc1 at 50%, the output layer at 75%)."""
    with deterministic_parent(tmp_path_factory.mktemp("parent")) as (root, _):
        yield root


class RecordMasks(Hook):
    """The model's masks at every stop of the run (after the pruning hook's)."""

    def __init__(self, seen):
        self.seen = seen

    def at_stop(self, run, iteration):
        self.seen.append((iteration, masks_lib.get_masks(run.model)))


class InterruptAt(Hook):
    """Stops the process (as Ctrl-C would) right after the checkpoint at `iteration`."""

    def __init__(self, iteration):
        self.iteration = iteration

    def on_checkpoint(self, run, iteration):
        if iteration == self.iteration:
            raise KeyboardInterrupt


def add_hook(monkeypatch, make):
    original = pdt.PruneDuringTraining.hooks
    monkeypatch.setattr(pdt.PruneDuringTraining, "hooks",
                        lambda self, spec: original(self, spec) + ([make()] if spec.name.endswith("_pruning") else []))


def folder(root):
    [branch] = glob.glob(os.path.join(root, "replicate_0", "level_01", "branch_prune_during_training_*"))
    return branch


def test_prunes_to_the_levels_counts_never_revives_and_reset_retrains_from_theta0(parent, tmp_path, monkeypatch):
    root = copy_of(parent, tmp_path / "a")
    seen = []
    add_hook(monkeypatch, lambda: RecordMasks(seen))
    assert run_branch(f"--experiment_dir={root}", *QUICK, "--then=keep", "--criterion=movement") == 0
    experiment = Experiment.open(root)
    target = experiment.masks(0, 1, "imp")
    run = os.path.join(folder(root), "imp_pruning")
    final = files.read_masks(os.path.join(run, "final_mask.npz"))
    assert masks_lib.counts(final) == masks_lib.counts(target), "the level's per-layer counts, to the weight"
    assert all(m.all() for m in files.read_masks(os.path.join(run, "mask.npz")).values()), "it starts dense"
    # Between stops a mask only loses ones; at each pruning it follows the geometric schedule.
    sizes = {n: m.size for n, m in target.items()}
    previous = {n: np.ones_like(m) for n, m in target.items()}
    for iteration, masks in seen:
        assert all(np.all(masks[n] <= previous[n]) for n in masks), f"a pruned weight revived at {iteration}"
        done = sum(1 for t in (10, 20, 30) if t <= iteration)
        assert masks_lib.counts(masks) == gradual.counts_after(sizes, masks_lib.counts(target), done, 3), iteration
        previous = masks
    assert {i for i, _ in seen} >= {10, 20, 30, 40, 60}
    assert masks_lib.counts(seen[[i for i, _ in seen].index(10)][1])["fc1/kernel"] < sizes["fc1/kernel"]
    weights = dict(zip(files.read_weight_names(os.path.join(run, "final_weights.npz")),
                       files.read_weights(os.path.join(run, "final_weights.npz"))))
    for name, mask in final.items():
        assert np.all(weights[f"{name}:0"][mask == 0] == 0.0), name
        assert np.count_nonzero(weights[f"{name}:0"]) == np.count_nonzero(mask), name
    [row] = experiment.branch_table("prune_during_training")
    imp_row = next(r for r in experiment.rows() if (r["level"], r["variant"]) == (1, "imp"))
    assert (row["run"], row["then"], row["criterion"], row["iterations_spent"]) == ("imp_pruning", "keep", "movement", 60)
    assert row["density"] == pytest.approx(row["target_density"]) and row["target_density"] == pytest.approx(imp_row["density"])
    assert row["imp_final_test_accuracy"] == pytest.approx(imp_row["final_test_accuracy"])
    assert row["imp_iterations_spent"] == imp_row["iterations_spent"] == 120
    assert (row["prunings"], row["last_prune_iteration"], row["prune_interval"]) == (3, 30, 10)

    # Asking for reset too adds its retraining run only: the pruning run is not trained again.
    before, seen[:] = digest(run), []
    assert run_branch(f"--experiment_dir={root}", *QUICK, "--then=keep,reset", "--criterion=movement") == 0
    assert digest(run) == before and seen == [], "the pruning run was trained again"
    reset = os.path.join(folder(root), "imp_reset")
    spec = files.read_json(os.path.join(reset, "run.json"))
    assert spec["init"] == {"label": "theta_0", "file": "replicate_0/theta_0.npz"} and spec["start_iteration"] == 0
    retrained = files.read_masks(os.path.join(reset, "mask.npz"))
    assert all(np.array_equal(retrained[n], final[n]) for n in final), "reset retrains the pruning run's final mask"
    table = Experiment.open(root).branch_table("prune_during_training")
    assert [(r["run"], r["then"], r["iterations_spent"]) for r in table] == [
        ("imp_pruning", "keep", 60), ("imp_reset", "reset", 120)]
    assert table[1]["density"] == pytest.approx(row["target_density"])


def test_rewind_starts_both_runs_from_a_replayed_theta_k_and_counts_both(parent, tmp_path):
    root = copy_of(parent, tmp_path / "rewind")
    assert run_branch(f"--experiment_dir={root}", *QUICK, "--then=rewind", "--rewind_point=20", "--prune_until=40") == 0
    for name in ("imp_pruning", "imp_rewind"):
        spec = files.read_json(os.path.join(folder(root), name, "run.json"))
        assert spec["init"] == {"label": "theta_at_20", "file": "replicate_0/theta_at_20.npz"}, name
        assert spec["start_iteration"] == 20, name
    pruning = files.read_json(os.path.join(folder(root), "imp_pruning", "result.json"))
    assert pruning["prune_iterations"] == [30, 40] and pruning["iterations_trained"] == 40
    final = files.read_masks(os.path.join(folder(root), "imp_pruning", "final_mask.npz"))
    assert masks_lib.counts(final) == masks_lib.counts(Experiment.open(root).masks(0, 1, "imp"))
    [row] = Experiment.open(root).branch_table("prune_during_training")
    assert (row["run"], row["then"], row["criterion"], row["start_iteration"], row["iterations_spent"]) == \
        ("imp_rewind", "rewind", "magnitude", 20, 80)


def test_movement_drops_the_survivors_that_moved_least_and_magnitude_the_smallest():
    now = np.array([[0.5, -0.2, 0.9], [0.1, 0.0, -0.4]], np.float32)
    start = np.array([[0.4, 0.3, 0.9], [-0.5, 0.05, -0.4]], np.float32)
    # moved: 0.1, 0.5, 0.0 / 0.6, 0.05, 0.0; the 0.6 one is already pruned and stays so.
    current = {"w": np.array([[1, 1, 1], [0, 1, 1]], np.float32)}
    movement = gradual.prune_to_counts(gradual.scores("movement", {"w": now}, {"w": start}), current, {"w": 2})
    np.testing.assert_array_equal(movement["w"], [[1, 1, 0], [0, 0, 0]])
    magnitude = gradual.prune_to_counts(gradual.scores("magnitude", {"w": now}, {"w": start}), current, {"w": 2})
    np.testing.assert_array_equal(magnitude["w"], [[1, 0, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match="only 5 survive"):
        gradual.prune_to_counts(gradual.scores("magnitude", {"w": now}, {}), current, {"w": 6})


def test_the_schedule_is_geometric_and_ends_exactly_at_the_targets():
    sizes, targets = {"a": 1000, "b": 10, "c": 7}, {"a": 36, "b": 9, "c": 7}
    steps = [gradual.counts_after(sizes, targets, j, 5) for j in range(6)]
    assert steps[0] == sizes and steps[-1] == targets
    assert all(later[n] <= earlier[n] for earlier, later in zip(steps, steps[1:]) for n in sizes)
    assert steps[1]["a"] == round(1000 * 0.036 ** 0.2)
    assert gradual.prune_iterations(20, 10, 55) == [30, 40, 50] and gradual.prune_iterations(0, 100, 30) == []


def test_an_interrupted_pruning_run_resumes_to_the_same_final_mask(parent, tmp_path, monkeypatch):
    args = (*QUICK, "--then=keep", "--criterion=movement")
    whole, killed = copy_of(parent, tmp_path / "whole"), copy_of(parent, tmp_path / "killed")
    assert run_branch(f"--experiment_dir={whole}", *args) == 0
    with monkeypatch.context() as patch:
        add_hook(patch, lambda: InterruptAt(20))
        assert run_branch(f"--experiment_dir={killed}", *args) == 1
    run = os.path.join(folder(killed), "imp_pruning")
    assert glob.glob(os.path.join(run, "checkpoints", "ckpt-20*")) and not os.path.exists(os.path.join(run, "result.json"))
    assert not os.path.exists(os.path.join(run, "final_mask.npz"))
    assert run_branch(f"--experiment_dir={killed}", *args) == 0
    masks = [files.read_masks(os.path.join(folder(r), "imp_pruning", "final_mask.npz")) for r in (whole, killed)]
    assert all(np.array_equal(masks[0][n], masks[1][n]) for n in masks[0])
    rows = [Experiment.open(r).branch_table("prune_during_training")[0] for r in (whole, killed)]
    assert rows[0]["final_test_accuracy"] == rows[1]["final_test_accuracy"]
    assert rows[0]["density"] == rows[1]["density"]


@pytest.mark.parametrize("args, message", [
    (("--then=keep,bogus",), "--then: expected some of keep, reset, rewind"),
    (("--then=keep,keep",), "--then: lists a value twice"),
    (("--then=rewind",), "--then=rewind: the pruning run starts from θ0"),
    (("--criterion=largest",), "--criterion=largest: value should be one of <magnitude|movement>"),
    (("--prune_until=61",), "--prune_until: 61 is not after the run's start (0) and at most --iterations=60"),
    (("--prune_every=31",), "--prune_every: 31 iterations leave no pruning between iteration 0 and --prune_until=30"),
    (("--prune_every=-1",), "--prune_every: must be >= 0"),
    (("--rewind_point=60",), "--rewind_point: 60 is not before the end of training"),
    (("--levels=0",), "level 0 is the dense network"),
])
def test_bad_options_are_one_line_exit_2_and_write_nothing(parent, capsys, args, message):
    before = digest(parent)
    quick = [a for a in QUICK if not any(a.startswith(given.split("=")[0] + "=") for given in args)]
    code = run_branch(f"--experiment_dir={parent}", *quick, *args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("tf_lottery.branch: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert digest(parent) == before


def test_the_default_interval_is_one_epoch_and_too_long_for_a_short_run(parent, capsys):
    assert run_branch(f"--experiment_dir={parent}", "--branch=prune_during_training", "--levels=1", "--dry_run") == 2
    err = capsys.readouterr().err
    assert "--prune_every: 1719 iterations (one epoch) leave no pruning" in err, err  # ceil(55000 / 32)
    assert run_branch(f"--experiment_dir={parent}", *QUICK, "--then=keep,reset", "--dry_run") == 0
    assert "replicate 0 level 1 imp_reset: imp_pruning, imp_reset" in capsys.readouterr().out
