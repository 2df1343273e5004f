"""Hooks plug into the one training loop: a gradual-pruning hook, written against the
public API alone, prunes mid-run, keeps pruned weights at zero and is counted in result.json."""

import numpy as np

from conftest import small_config
from tf_lottery.experiment import files
from tf_lottery.experiment.paths import ExperimentPaths
from tf_lottery.pruning import masks as masks_lib, strategies
from tf_lottery.training.hooks import Hook
from tf_lottery.training.run import InitialWeights, RunSpec, train
from tf_lottery.training.workbench import Workbench, fresh_weights


class PruneHalfAt(Hook):
    """At `iteration`, prunes half of every weight's survivors by magnitude (gradual pruning in one step)."""

    def __init__(self, iteration):
        self.iteration = iteration

    def next_stop(self, iteration):
        return self.iteration if iteration < self.iteration else None

    def at_stop(self, run, iteration):
        if iteration != self.iteration:
            return
        current = masks_lib.get_masks(run.model)
        groups = [((path,), 0.5) for path in current]
        masks_lib.apply_masks(run.model, strategies.magnitude_masks(masks_lib.prunable_values(run.model), current, groups, 1))


def test_a_hook_prunes_mid_run_and_the_result_counts_it(tmp_path):
    config = small_config(tmp_path, iterations=40, eval_every=20, checkpoint_every=20)
    root = ExperimentPaths.of(str(tmp_path), "hooked").root
    with Workbench(None, root) as bench:
        info = bench.splits(config).info
        names, values = fresh_weights(config, info, seed=3)
        files.write_weights(f"{root}/theta.npz", names, values)
        model = bench.trainer(config).model
        spec = RunSpec(directory=f"{root}/run", config=config, replicate=0, level=0, name="gradual",
                       masks=masks_lib.ones_like_model(model), init=InitialWeights.from_file(f"{root}/theta.npz", "theta"))
        result = train(spec, bench, [PruneHalfAt(20)])
    assert abs(result["density"] - 0.5) < 1e-3
    assert all(abs(d - 0.5) < 1e-3 for d in result["weight_densities"].values())
    weights = files.read_weights(f"{root}/run/final_weights.npz")
    started = files.read_masks(f"{root}/run/mask.npz")
    assert all(m.all() for m in started.values()), "mask.npz keeps the masks the run started with"
    kernel = weights[names.index("fc1/kernel:0")]
    assert np.count_nonzero(kernel) == round(kernel.size * 0.5), "pruned weights stayed at zero after the hook"
