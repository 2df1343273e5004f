"""--retrain: lr_rewind and finetune start each pruned level from the weights its mask was
computed from, replay the schedule from k or train at its final rate, and so do the controls."""

import pytest

from conftest import small_config
from test_runner import _metric, _validation_loss
from tf_lottery.config import ConfigError
from tf_lottery.experiment.paths import ExperimentPaths
from tf_lottery.experiment.reader import Experiment
from tf_lottery.lottery import imp
from tf_lottery.pruning import masks
from tf_lottery.training import checkpoints, summaries
from tf_lottery.utils import read_json

# A schedule that changes at 50, rewound to 20: lr_rewind trains at 3e-3 then 1e-3, finetune at 1e-3 throughout.
SCHEDULE = dict(lr_values=(3e-3, 1e-3), lr_boundaries=(50,), rewind_iteration=20, controls=("reinit", "random_prune"))


@pytest.fixture(scope="module", params=["lr_rewind", "finetune"])
def experiment(request, tmp_path_factory):
    config = small_config(tmp_path_factory.mktemp(request.param), retrain=request.param, **SCHEDULE)
    imp.run_experiment(config)
    return config, ExperimentPaths.of(config.run.output_dir, config.experiment_name)


def _learning_rates(run):
    """{evaluated iteration: the learning rate logged there}."""
    return {row["iteration"]: row["value"] for row in summaries.read_metrics(run.metrics)
            if row["split"] == "train" and row["metric"] == "learning_rate"}


def test_each_pruned_level_starts_from_the_previous_levels_trained_weights(experiment):
    config, paths = experiment
    k = config.pruning.rewind_iteration
    for level in (1, 2):
        run, previous = paths.run(0, level, "imp"), paths.run(0, level - 1, "imp")
        record = read_json(run.spec)
        assert record["init"] == {"label": "previous_final", "file": f"replicate_0/level_{level - 1:02d}/imp/final_weights.npz"}
        assert record["start_iteration"] == k
        trained = checkpoints.read_weights(previous.final_weights)
        assert _metric(run, "validation", "loss", k) == pytest.approx(
            _validation_loss(config, trained, masks.load(run.mask)), rel=1e-5)
        # random_prune prunes the same trained weights at random; reinit draws fresh ones.
        random_run = paths.run(0, level, "random_prune")
        assert _metric(random_run, "validation", "loss", k) == pytest.approx(
            _validation_loss(config, trained, masks.load(random_run.mask)), rel=1e-5)
        assert read_json(paths.run(0, level, "reinit").spec)["init"]["label"] == "fresh"


def test_the_learning_rate_is_replayed_from_k_or_held_at_the_final_value(experiment):
    config, paths = experiment
    dense = _learning_rates(paths.run(0, 0, "imp"))
    assert dense[20] == pytest.approx(3e-3) and dense[60] == pytest.approx(1e-3)
    for variant in ("imp", "reinit", "random_prune"):
        run = paths.run(0, 1, variant)
        rates = _learning_rates(run)
        assert sorted(rates) == [40, 60]
        if config.pruning.retrain == "lr_rewind":
            assert rates == pytest.approx({40: 3e-3, 60: 1e-3}), variant
        else:
            assert rates == pytest.approx({40: 1e-3, 60: 1e-3}), variant
            stored = read_json(run.spec)["config"]
            assert (stored["learning_rate"], stored["lr_values"], stored["lr_boundaries"]) == (1e-3, [], [])


def test_the_experiment_reads_back_with_its_retraining_mode(experiment):
    config, paths = experiment
    parent = Experiment.open(paths.root)
    assert parent.config.pruning.retrain == config.pruning.retrain
    path, label, start = parent.start_of(0, 2, "imp")
    assert (label, start) == ("previous_final", 20) and path.endswith("level_01/imp/final_weights.npz")


def test_an_unknown_mode_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="--retrain"):
        small_config(tmp_path, retrain="rewind")
