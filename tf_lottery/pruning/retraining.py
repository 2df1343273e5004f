"""What a pruned level retrains with, by --retrain (Renda, Frankle & Carbin 2020).

reset and lr_rewind train the experiment's schedule from --rewind_iteration;
finetune trains the same iterations at the schedule's final learning rate. Where
the survivors start is the IMP loop's business (imp.py): θ0/θk for reset, the
trained weights the mask was computed from otherwise. With a constant learning
rate (Adam as in the LeNet recipe) lr_rewind and finetune are the same runs.
"""

from tf_lottery.config import ExperimentConfig


def final_learning_rate(config: ExperimentConfig) -> float:
    """The learning rate the schedule ends at (its last piece; warmup is long over)."""
    training = config.training
    return float(training.lr_values[-1]) if training.lr_values else float(training.learning_rate)


def retraining_config(config: ExperimentConfig, level: int) -> ExperimentConfig:
    """The settings level `level`'s runs train with: the experiment's, but for finetune's pruned
    levels a constant learning rate at the schedule's final value."""
    if level == 0 or config.pruning.retrain != "finetune":
        return config
    return config.replace(learning_rate=final_learning_rate(config), lr_values=(), lr_boundaries=(),
                          warmup_iterations=0)
