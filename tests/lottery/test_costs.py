"""iterations_spent: a network's own training plus what its mask needed, for iterative and
one-shot pruning, rewinding, controls, and results written before runs counted their iterations."""

import json

from tf_lottery.experiment import results
from tf_lottery.experiment.paths import ExperimentPaths


def _row(level, variant, trained):
    return {"replicate": 0, "level": level, "variant": variant, "iterations_trained": trained}


def test_iterative_levels_add_up_their_lineage_and_controls_share_their_level():
    # Rewinding to k=100 of a 1,000-iteration schedule: pruned levels train 900.
    rows = [_row(0, "imp", 1000), _row(1, "imp", 900), _row(1, "reinit", 900), _row(2, "random_prune", 900),
            _row(2, "imp", 900)]
    costs = [r["iterations_spent"] for r in results.add_costs(rows, "iterative")]
    assert costs == [1000, 1900, 1900, 2800, 2800]


def test_one_shot_levels_need_only_the_dense_run():
    rows = [_row(0, "imp", 1000), _row(1, "imp", 1000), _row(3, "imp", 1000)]
    assert [r["iterations_spent"] for r in results.add_costs(rows, "oneshot")] == [1000, 2000, 2000]


def test_a_missing_run_in_the_lineage_leaves_the_cost_empty():
    rows = [_row(0, "imp", 1000), _row(2, "imp", 1000)]
    assert [r["iterations_spent"] for r in results.add_costs(rows, "iterative")] == [1000, None]


def test_results_without_iterations_trained_count_from_run_json(tmp_path):
    paths = ExperimentPaths.of(str(tmp_path), "old")
    for level, start in ((0, 0), (1, 200)):
        run = paths.run(0, level, "imp")
        (tmp_path / "old" / f"replicate_0/level_{level:02d}/imp").mkdir(parents=True)
        with open(run.result, "w") as f:
            json.dump({"replicate": 0, "level": level, "variant": "imp", "final_iteration": 1000}, f)
        with open(run.spec, "w") as f:
            json.dump({"start_iteration": start}, f)
    rows = results.result_rows(paths)
    assert [(r["iterations_trained"], r["iterations_spent"]) for r in rows] == [(1000, 1000), (800, 1800)]
