"""--early_bird: a level ends once the mask it would give the next level stops changing; the
distances, the iteration and the cost are recorded, and a killed level resumes to the same stop."""

import numpy as np
import pytest

from conftest import small_config
from stop_hook import StopAt
from tf_lottery import branches
from tf_lottery.branches import runner
from tf_lottery.branches.base import Cell
from tf_lottery.config import ConfigError
from tf_lottery.experiment import files
from tf_lottery.experiment.paths import ExperimentPaths
from tf_lottery.experiment.reader import Experiment
from tf_lottery.lottery import early_bird, imp
from tf_lottery.pruning import masks as masks_lib, strategies
from tf_lottery.training import summaries
from tf_lottery.training.run import InitialWeights, RunSpec, train
from tf_lottery.training.workbench import Workbench, fresh_weights

# Draws at 10, 20, 30: with a threshold of 1 every distance counts as settled, so two of them end a level at 30.
SETTLES = dict(iterations=60, eval_every=10, checkpoint_every=20, early_bird=True, early_bird_every=10,
               early_bird_window=2, early_bird_threshold=1.0)


def test_mask_distance_is_the_fraction_of_differing_bits():
    a = {"x": np.array([1, 1, 0, 0], np.float32), "y": np.ones((2, 3), np.float32)}
    b = {"x": np.array([1, 0, 1, 0], np.float32), "y": np.ones((2, 3), np.float32)}
    assert early_bird.mask_distance(a, b) == pytest.approx(2 / 10)
    assert early_bird.mask_distance(a, a) == 0.0
    # Counted among the weights the masks were drawn from (a sparse level's survivors), not all weights.
    among = {"x": np.array([1, 1, 1, 0], np.float32), "y": np.zeros((2, 3), np.float32)}
    assert early_bird.mask_distance(a, b, among) == pytest.approx(2 / 3)


def test_settled_needs_the_whole_window_below_the_threshold():
    assert early_bird.settled([0.5, 0.05, 0.02], window=2, threshold=0.1)
    assert not early_bird.settled([0.05, 0.5, 0.02], window=2, threshold=0.1)
    assert not early_bird.settled([0.02], window=2, threshold=0.1)


@pytest.fixture(scope="module")
def settled_experiment(tmp_path_factory):
    config = small_config(tmp_path_factory.mktemp("early_bird"), **SETTLES)
    rows = imp.run_experiment(config)
    return config, Experiment.open(ExperimentPaths.of(config.run.output_dir, config.experiment_name).root), rows


def test_each_level_ends_where_its_masks_settled_and_the_next_is_pruned_there(settled_experiment):
    config, experiment, rows = settled_experiment
    assert [(r["level"], r["final_iteration"], r["early_bird_iteration"]) for r in rows] == [(0, 30, 30), (1, 30, 30), (2, 30, 30)]
    distances = [r for r in summaries.read_metrics(experiment.run(0, 0, "imp").metrics) if r["split"] == "early_bird"]
    assert [r["iteration"] for r in distances] == [20, 30]
    # Level 1's mask is the magnitude mask of level 0's weights at iteration 30, where it ended.
    final = dict(zip(files.read_weight_names(experiment.run(0, 0, "imp").final_weights),
                     experiment.final_weights(0, 0, "imp")))
    expected = strategies.keep_count(16 * 784, 0.5, 1)
    assert int(experiment.masks(0, 1, "imp")["fc1/kernel"].sum()) == expected
    kept = np.abs(final["fc1/kernel:0"]).reshape(-1).argsort()[::-1][:expected]
    assert set(np.flatnonzero(experiment.masks(0, 1, "imp")["fc1/kernel"].reshape(-1))) == set(kept)


def test_costs_count_each_early_level_and_the_full_retraining(settled_experiment):
    config, experiment, rows = settled_experiment
    assert [r["iterations_spent"] for r in rows] == [30, 60, 90]
    assert experiment.table()[2]["iterations_spent"] == 90  # results.csv has it too
    branch = branches.get("retrain_ticket")(experiment, overrides=config.flat())
    with Workbench(None, experiment.paths.root) as bench:
        [row] = runner.run_branch(branch, [Cell(0, 2, "imp")], bench)
    assert row["iterations_trained"] == 60, "the retrained ticket trains to the end of the schedule"
    assert row["iterations_spent"] == 60 + 60, "its mask cost levels 0 and 1 (30 each), then the full run"


def test_masks_that_keep_changing_train_the_level_to_its_end(tmp_path):
    config = small_config(tmp_path, **{**SETTLES, "early_bird_threshold": 1e-9, "levels": 0})
    [row] = imp.run_experiment(config)
    assert row["final_iteration"] == 60 and row["early_bird_iteration"] is None


def test_an_interrupted_level_resumes_to_the_same_distances_and_stop(tmp_path):
    # Settles only at 50 (window 4), so the resumption from the checkpoint at 20 must carry the mask drawn there.
    config = small_config(tmp_path, **{**SETTLES, "early_bird_window": 4, "deterministic": True})
    root = ExperimentPaths.of(str(tmp_path), "resumed").root
    results = {}
    with Workbench(None, root) as bench:
        model = bench.trainer(config).model
        names, values = fresh_weights(config, bench.splits(config).info, seed=5)
        files.write_weights(f"{root}/theta.npz", names, values)
        groups = strategies.groups(strategies.weight_rates(model, config.pruning), "layerwise")

        def hook():
            return early_bird.EarlyBird(lambda m: strategies.magnitude_masks(
                masks_lib.prunable_values(m), masks_lib.get_masks(m), groups, 1), 10, 4, 1.0)

        for name, interrupt in (("whole", False), ("killed", True)):
            spec = RunSpec(directory=f"{root}/{name}", config=config, replicate=0, level=0, name=name,
                           masks=masks_lib.ones_like_model(model), init=InitialWeights.from_file(f"{root}/theta.npz", "theta"))
            if interrupt:
                with pytest.raises(KeyboardInterrupt):
                    train(spec, bench, [hook(), StopAt(30)])
                assert sorted(p.name for p in (tmp_path / "resumed" / name).glob("early_bird_mask_*")) == ["early_bird_mask_20.npz"]
            results[name] = train(spec, bench, [hook()])
            results[name]["distances"] = [r["value"] for r in summaries.read_metrics(f"{root}/{name}/metrics.csv")
                                          if r["split"] == "early_bird"]
            assert not list((tmp_path / "resumed" / name).glob("early_bird_mask_*")), "state files are removed at the end"
    assert results["whole"]["early_bird_iteration"] == 50
    assert results["killed"]["early_bird_iteration"] == 50
    assert results["killed"]["distances"] == results["whole"]["distances"]
    assert len(results["whole"]["distances"]) == 4 and max(results["whole"]["distances"]) > 0


@pytest.mark.parametrize("values, flag", [
    ({"early_bird": True, "prune_mode": "oneshot"}, "--early_bird"),
    ({"early_bird_window": 3}, "--early_bird_window"),
    ({"early_bird": True, "early_bird_threshold": 0.0}, "--early_bird_threshold"),
])
def test_bad_early_bird_settings_are_one_line_errors(tmp_path, values, flag):
    with pytest.raises(ConfigError, match=flag) as error:
        small_config(tmp_path, **values)
    assert "\n" not in str(error.value)


def test_channel_early_bird_measures_the_distance_between_channel_masks_in_a_run(tmp_path):
    """On LeNet-5 with --pruning_structure=channels each distance is a count of its 70 filters (20 + 50)
    over 70, not of its 430,500 weights; the level still ends where the masks settled."""
    config = small_config(tmp_path, model="lenet5", hidden_units=(), pruning_structure="channels",
                          conv_prune_rate=0.5, levels=1, **SETTLES)
    imp.run_experiment(config)
    experiment = Experiment.open(ExperimentPaths.of(config.run.output_dir, config.experiment_name).root)
    distances = [r["value"] for r in summaries.read_metrics(experiment.run(0, 0, "imp").metrics)
                 if r["split"] == "early_bird"]
    assert len(distances) == 2
    assert all(abs(d * 70 - round(d * 70)) < 1e-6 for d in distances), distances
    assert any(d > 0 for d in distances), "early masks of a training network differ in some filter"
    assert experiment.result(0, 0, "imp")["early_bird_iteration"] == 30
