"""Frozen, validated configuration for an experiment.

Every field carries its own help text and choices: `flags.py` turns the fields
into absl flags, so a flag and the field it sets are one definition. Fields marked
`hashed=False` do not change what a run computes (where it is written, how it is
shown, how many levels or replicates are run) and so stay out of the experiment
name's hash: adding levels, replicates or controls extends an experiment instead
of starting a new one.
"""

import dataclasses
import hashlib
import json
from typing import Any, Dict, Optional, Tuple

from tf_lottery.errors import INT64_MAX, UsageError
from tf_lottery.utils import derive_seed, spans

VARIANTS = ("imp", "reinit", "random_prune")
CONTROLS = VARIANTS[1:]
# Which survivors a level keeps (tf_lottery.pruning.criteria describes each).
MASK_CRITERIA_BASE = ("large_final", "small_final", "large_init", "small_init", "magnitude_increase", "movement",
                      "large_init_large_final", "random")
MASK_CRITERIA = MASK_CRITERIA_BASE + tuple(c + "_same_sign" for c in MASK_CRITERIA_BASE if c != "random")
# What a level removes (tf_lottery.pruning.structure describes each).
PRUNING_STRUCTURES = ("unstructured", "neurons", "channels", "n_of_m")
CHANNEL_SCORES = ("l1", "batchnorm")


class ConfigError(UsageError):
    """A flag value that cannot be run; the message names the flag."""


def option(default, help, *, choices=None, hashed=True, recorded=True):  # pylint: disable=redefined-builtin
    """A config field with the help text and choices of its flag.

    `recorded=False` marks a setting of one invocation rather than of the experiment
    (which replicate this process runs): flags.cfg leaves it out.
    """
    return dataclasses.field(
        default=default,
        metadata={"help": help, "choices": choices, "hashed": hashed, "recorded": recorded},
    )


def _require(condition: bool, flag: str, message: str):
    if not condition:
        raise ConfigError(f"--{flag}: {message}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = option("mnist", "tensorflow-datasets name: an image classification set (image/label features), "
                          "a text set (one text feature: language modelling), or gym:<id> for a gymnasium "
                          "environment (reinforcement learning, e.g. gym:CartPole-v1).")
    data_dir: Optional[str] = option(None, "TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).", hashed=False)
    download: bool = option(True, "Let TFDS download and prepare a dataset that is not prepared under --data_dir.", hashed=False)
    validation_size: int = option(5000, "Training examples held out as the validation split (never the test set).")
    batch_size: int = option(60, "Global training batch size.")
    eval_batch_size: int = option(1000, "Batch size for validation and test evaluation.", hashed=False)
    augment: str = option("auto", "Training augmentation: auto (the model's default), on or off.", choices=("auto", "on", "off"))
    data_seed: int = option(-1, "Seed of the training data order (and augmentation); replicate r uses data_seed + r. "
                            "-1: derived from --seed, so runs from the same weights differ in their SGD noise only when it is set.")
    classes: str = option("", "Train and test on these labels only, e.g. 0-4 or 1,3,5: relabelled 0..n-1 in "
                          "increasing order (dataset.json keeps the mapping); empty: every class.")
    sequence_length: int = option(100, "Characters per training and evaluation window of a language-modelling "
                                  "dataset (the model reads n and predicts the n next).")

    def __post_init__(self):
        object.__setattr__(self, "classes", canonical_classes(self.classes))  # 0,1,2 and 0-2 are one experiment

    def validate(self):
        _require(bool(self.dataset), "dataset", "must name a tensorflow-datasets dataset")
        _require(self.validation_size >= 0, "validation_size", f"must be >= 0, got {self.validation_size}")
        _require(self.batch_size > 0, "batch_size", f"must be > 0, got {self.batch_size}")
        _require(self.eval_batch_size > 0, "eval_batch_size", f"must be > 0, got {self.eval_batch_size}")
        _require(self.data_seed >= -1, "data_seed", f"must be >= 0, or -1 to derive it from --seed, got {self.data_seed}")
        _require(len(class_list(self.classes)) != 1, "classes", f"needs at least two classes, got {self.classes}")
        _require(self.sequence_length > 0, "sequence_length", f"must be > 0, got {self.sequence_length}")

    def class_list(self) -> Tuple[int, ...]:
        """The chosen original labels, increasing (empty: every class)."""
        return class_list(self.classes)


def class_list(text: str) -> Tuple[int, ...]:
    """'0-2,5' -> (0, 1, 2, 5); '' -> ()."""
    labels = set()
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        low, dash, high = part.partition("-")
        try:
            first, last = int(low), int(high) if dash else int(low)
        except ValueError:
            raise ConfigError(f"--classes: expected labels and ranges like 0-4 or 1,3,5, got {text!r}") from None
        if first < 0 or last < first:
            raise ConfigError(f"--classes: expected labels >= 0 and increasing ranges, got {text!r}")
        labels.update(range(first, last + 1))
    return tuple(sorted(labels))


def canonical_classes(text: str) -> str:
    """The one spelling of a class subset: '2,0,1,5' -> '0-2,5'."""
    return spans(class_list(text)).replace(" ", "")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    model: str = option("lenet300_100", "Registered model name (tf_lottery.models.names()).")
    hidden_units: Tuple[int, ...] = option((), "Hidden layer widths of the `mlp` and `policy_mlp` models, e.g. 64,32.")
    embedding_dim: int = option(0, "Token embedding width of `lstm_lm`, model width of `transformer_lm` (0: the model's default).")
    lstm_units: Tuple[int, ...] = option((), "LSTM layer widths of `lstm_lm`, e.g. 256,256 (empty: the model's default).")
    num_blocks: int = option(0, "Decoder blocks of `transformer_lm` (0: the model's default).")
    num_heads: int = option(0, "Attention heads of `transformer_lm` (0: the model's default).")
    mlp_dim: int = option(0, "Hidden width of `transformer_lm`'s MLPs (0: the model's default).")

    def validate(self):
        _require(all(u > 0 for u in self.hidden_units), "hidden_units", "widths must be > 0")
        _require(not self.hidden_units or self.model in ("mlp", "policy_mlp"), "hidden_units",
                 "applies only to --model=mlp and --model=policy_mlp")
        _require(all(u > 0 for u in self.lstm_units), "lstm_units", "widths must be > 0")
        _require(not self.lstm_units or self.model == "lstm_lm", "lstm_units", "applies only to --model=lstm_lm")
        for name in ("embedding_dim", "num_blocks", "num_heads", "mlp_dim"):
            value = getattr(self, name)
            _require(value >= 0, name, f"must be >= 0, got {value}")
        _require(not self.embedding_dim or self.model in ("lstm_lm", "transformer_lm"), "embedding_dim",
                 "applies only to --model=lstm_lm and --model=transformer_lm")
        for name in ("num_blocks", "num_heads", "mlp_dim"):
            _require(not getattr(self, name) or self.model == "transformer_lm", name,
                     "applies only to --model=transformer_lm")

    def options(self) -> dict:
        """The model factory's keyword options that were set (the rest take the model's defaults)."""
        names = ("hidden_units", "embedding_dim", "lstm_units", "num_blocks", "num_heads", "mlp_dim")
        return {name: getattr(self, name) for name in names if getattr(self, name)}


RETRAIN_MODES = ("reset", "lr_rewind", "finetune")


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    levels: int = option(0, "Pruning levels after the dense level 0 (level L keeps about (1-p)^L of the weights).", hashed=False)
    prune_mode: str = option("iterative", "iterative: prune p of the remaining weights each level; oneshot: prune the dense trained weights straight to level L's density.", choices=("iterative", "oneshot"))
    pruning_scope: str = option("layerwise", "layerwise: each layer loses its rate; global: layers sharing a rate are ranked together.", choices=("layerwise", "global"))
    prune_rate: float = option(0.2, "Fraction of the remaining dense-layer weights pruned per level.")
    conv_prune_rate: Optional[float] = option(None, "Fraction of the remaining convolution weights pruned per level (default: --prune_rate).")
    output_prune_rate: Optional[float] = option(None, "Fraction of the remaining output-layer weights pruned per level (default: half of --prune_rate, as in the paper).")
    prune_layers_ignore: Tuple[str, ...] = option((), "Layers (all their prunable weights) or weight paths (fc1/kernel) never pruned: their masks stay all ones.")
    rewind_iteration: int = option(0, "Reset survivors to the dense run's weights after this many iterations (0: the original initialisation).")
    retrain: str = option(
        "reset", "How each pruned level retrains (Renda et al. 2020). reset: survivors reset to θ0 (θk with "
        "--rewind_iteration), the schedule from k. lr_rewind: survivors keep the final weights of the run the mask "
        "was computed from, the learning-rate schedule replayed from --rewind_iteration. finetune: the same weights, "
        "trained from --rewind_iteration to the end at the schedule's final learning rate.",
        choices=RETRAIN_MODES)
    mask_criterion: str = option(
        "large_final", "Which survivors a level keeps (Zhou et al. 2019), scored from w_i, the weights the pruned "
        "level started from (θ0, or θk with --rewind_iteration), and w_f, its final weights: large_final |w_f|, "
        "small_final, large_init |w_i|, small_init, magnitude_increase |w_f|-|w_i|, movement |w_f-w_i|, "
        "large_init_large_final (both above one shared percentile), random; <criterion>_same_sign also drops the "
        "weights whose sign flipped.", choices=MASK_CRITERIA)
    controls: Tuple[str, ...] = option((), "Controls trained beside the ticket at every level: reinit, random_prune.", choices=CONTROLS, hashed=False)
    early_bird: bool = option(
        False, "Early-Bird tickets (You et al. 2020; on weights, or on channels with --pruning_structure=channels): every "
        "--early_bird_every iterations a level draws the mask the next level would take; once the last "
        "--early_bird_window normalised Hamming distances between successive masks are all below "
        "--early_bird_threshold, the level ends there and the next is pruned from its weights (iterative pruning).")
    early_bird_every: int = option(0, "Iterations between Early-Bird mask draws (0: one epoch of the training split).")
    early_bird_window: int = option(5, "Successive Early-Bird mask distances that must all be below the threshold.")
    early_bird_threshold: float = option(0.1, "Early-Bird threshold on the normalised Hamming distance between successive masks.")
    pruning_structure: str = option(
        "unstructured", "What a level removes. unstructured: single weights. neurons: whole units of Dense layers "
        "(kernel column, bias, and the rows of the layers reading them). channels: whole filters of Conv2D layers "
        "(Dense layers lose only the rows of removed channels). n_of_m: N of every M consecutive input weights of each "
        "output unit (--n_of_m). Level L keeps round(units*(1-p)^L) units of each layer (n_of_m: "
        "max(1, round(M*(1-p)^L)) of every M); output layers lose only the rows of removed inputs.",
        choices=PRUNING_STRUCTURES)
    channel_score: str = option(
        "l1", "How --pruning_structure=neurons|channels ranks units: l1 (L1 norm of the unit's trained weights) or "
        "batchnorm (|gamma| of the BatchNorm right after the layer, Network Slimming).", choices=CHANNEL_SCORES)
    n_of_m: Tuple[int, ...] = option((2, 4), "N,M of --pruning_structure=n_of_m: the most N of every M consecutive "
                                     "input weights kept (the pattern of sparse tensor cores at 2,4).")

    def rate_for(self, kind: str) -> float:
        """The per-level pruning rate of a layer kind: 'dense', 'conv' or 'output'."""
        if kind == "conv":
            return self.prune_rate if self.conv_prune_rate is None else self.conv_prune_rate
        if kind == "output":
            return self.prune_rate / 2 if self.output_prune_rate is None else self.output_prune_rate
        return self.prune_rate

    def validate(self):
        _require(self.levels >= 0, "levels", f"must be >= 0, got {self.levels}")
        for flag in ("prune_rate", "conv_prune_rate", "output_prune_rate"):
            value = getattr(self, flag)
            _require(value is None or 0.0 <= value < 1.0, flag, f"must be in [0, 1), got {value}")
        _require(self.rewind_iteration >= 0, "rewind_iteration", f"must be >= 0, got {self.rewind_iteration}")
        _require(self.retrain in RETRAIN_MODES, "retrain",
                 f"unknown mode {self.retrain!r}; known: {', '.join(RETRAIN_MODES)}")
        _require(self.mask_criterion in MASK_CRITERIA, "mask_criterion",
                 f"unknown criterion {self.mask_criterion!r}; known: {', '.join(MASK_CRITERIA)}")
        _require(not self.early_bird or self.mask_criterion == "large_final", "early_bird",
                 "draws masks by magnitude during training: it needs --mask_criterion=large_final")
        _require(not self.early_bird or self.prune_mode == "iterative", "early_bird",
                 "draws each level's mask from the level before it: it needs --prune_mode=iterative")
        _require(self.early_bird_every >= 0, "early_bird_every", f"must be >= 0, got {self.early_bird_every}")
        _require(self.early_bird_window >= 1, "early_bird_window", f"must be >= 1, got {self.early_bird_window}")
        _require(0.0 < self.early_bird_threshold <= 1.0, "early_bird_threshold",
                 f"must be in (0, 1], got {self.early_bird_threshold}")
        for flag in ("early_bird_every", "early_bird_window", "early_bird_threshold"):
            default = next(f.default for f in dataclasses.fields(self) if f.name == flag)
            _require(self.early_bird or getattr(self, flag) == default, flag, "applies only with --early_bird")
        self._validate_structure()
        unknown = [c for c in self.controls if c not in CONTROLS]
        _require(not unknown, "controls", f"unknown control(s) {', '.join(unknown)}; known: {', '.join(CONTROLS)}")
        _require(len(set(self.controls)) == len(self.controls), "controls", "lists a control twice")

    def _validate_structure(self):
        structure = self.pruning_structure
        _require(structure in PRUNING_STRUCTURES, "pruning_structure",
                 f"unknown structure {structure!r}; known: {', '.join(PRUNING_STRUCTURES)}")
        _require(self.channel_score in CHANNEL_SCORES, "channel_score",
                 f"unknown score {self.channel_score!r}; known: {', '.join(CHANNEL_SCORES)}")
        _require(self.channel_score == "l1" or structure in ("neurons", "channels"), "channel_score",
                 "applies only with --pruning_structure=neurons or channels")
        _require(len(self.n_of_m) == 2 and 1 <= self.n_of_m[0] <= self.n_of_m[1], "n_of_m",
                 f"expected N,M with 1 <= N <= M, got {','.join(map(str, self.n_of_m))}")
        _require(self.n_of_m == (2, 4) or structure == "n_of_m", "n_of_m", "applies only with --pruning_structure=n_of_m")
        _require(structure == "unstructured" or self.mask_criterion == "large_final", "mask_criterion",
                 f"--pruning_structure={structure} scores units by magnitude: it needs --mask_criterion=large_final")
        _require(structure != "n_of_m" or self.pruning_scope == "layerwise", "pruning_scope",
                 "--pruning_structure=n_of_m keeps N of every M weights of each unit: it needs --pruning_scope=layerwise")
        _require(structure in ("unstructured", "channels") or not self.early_bird, "early_bird",
                 f"compares weight masks or channel masks: it needs --pruning_structure=unstructured or channels, got {structure}")

    def structured(self) -> bool:
        """Whether levels remove whole units (neurons or channels)."""
        return self.pruning_structure in ("neurons", "channels")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    iterations: int = option(50000, "Training iterations per level (the paper's unit of training time).")
    optimizer: str = option("adam", "Optimizer.", choices=("adam", "sgd", "momentum"))
    learning_rate: float = option(1.2e-3, "Learning rate (the first value when --lr_values is set).")
    momentum: float = option(0.9, "Momentum of --optimizer=momentum.")
    lr_boundaries: Tuple[int, ...] = option((), "Iterations at which the piecewise-constant learning rate changes.")
    lr_values: Tuple[float, ...] = option((), "Learning rates of the pieces: one more value than --lr_boundaries.")
    warmup_iterations: int = option(0, "Linear learning-rate warmup from 0 over this many iterations.")
    weight_decay: float = option(0.0, "L2 weight decay coefficient (gradient += weight_decay * weight).")
    bn_l1: float = option(0.0, "L1 penalty lambda*sum|gamma| on the BatchNorm scale parameters, added to the training "
                          "loss (Network Slimming / Early-Bird channel sparsity; 0: none).")
    eval_every: int = option(1000, "Evaluate validation and test loss/accuracy every N iterations.")
    test_every: int = option(
        0, "Evaluate test only every N iterations (a multiple of --eval_every; 0: at every evaluation). Test is "
        "also evaluated wherever validation loss reaches a new minimum and at the end, so the early-stopping "
        "and final numbers are the same for any N; only the test curve is sparser.", hashed=False)
    checkpoint_every: int = option(1000, "Checkpoint model, optimizer and data position every N iterations.", hashed=False)

    def validate(self):
        _require(self.iterations > 0, "iterations", f"must be > 0, got {self.iterations}")
        _require(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        _require(0.0 <= self.momentum < 1.0, "momentum", f"must be in [0, 1), got {self.momentum}")
        _require(self.warmup_iterations >= 0, "warmup_iterations", f"must be >= 0, got {self.warmup_iterations}")
        _require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(self.bn_l1 >= 0, "bn_l1", f"must be >= 0, got {self.bn_l1}")
        _require(self.eval_every > 0, "eval_every", f"must be > 0, got {self.eval_every}")
        _require(self.test_every >= 0 and self.test_every % self.eval_every == 0, "test_every",
                 f"must be 0 or a multiple of --eval_every ({self.eval_every}), got {self.test_every}")
        _require(self.checkpoint_every > 0, "checkpoint_every", f"must be > 0, got {self.checkpoint_every}")
        if self.lr_values or self.lr_boundaries:
            _require(
                len(self.lr_values) == len(self.lr_boundaries) + 1, "lr_values",
                f"needs one more value than --lr_boundaries ({len(self.lr_boundaries)}), got {len(self.lr_values)}",
            )
            _require(all(v > 0 for v in self.lr_values), "lr_values", "learning rates must be > 0")
            _require(list(self.lr_boundaries) == sorted(set(self.lr_boundaries)), "lr_boundaries", "must be strictly increasing")
            _require(all(0 < b < self.iterations for b in self.lr_boundaries), "lr_boundaries", "must lie inside (0, --iterations)")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    output_dir: str = option("runs", "Directory holding one folder per experiment.", hashed=False)
    experiment_name: str = option("", "Experiment folder name (default: model-dataset-<hash of the non-default flags>).", hashed=False)
    seed: int = option(0, "Base random seed; replicate r uses seed + r.")
    replicates: int = option(1, "Independent repetitions of the experiment, each with its own seed.", hashed=False)
    replicate: int = option(-1, "Run only this replicate (0-based; -1: all). Processes running different replicates of one experiment may share its folder.", hashed=False, recorded=False)
    deterministic: bool = option(False, "Enable TensorFlow op determinism: identical results on reruns and resumptions.", hashed=False)
    strategy: str = option(
        "auto", "tf.distribute strategy: auto (mirrored over several GPUs, one_device on one GPU, default on CPU), "
        "default, one_device, mirrored, multi_worker (cluster from TF_CONFIG) or tpu. --batch_size stays the global batch.",
        choices=("auto", "default", "one_device", "mirrored", "multi_worker", "tpu"), hashed=False)
    num_cpu_devices: int = option(0, "Split the CPU into N logical devices, so --strategy=mirrored runs N replicas without GPUs (0: leave it whole).", hashed=False)
    tpu: str = option("", "TPU address for --strategy=tpu: a TPU name, grpc://host:port or 'local' on a TPU VM (default: the environment's TPU).", hashed=False)
    mixed_precision: str = option("float32", "Compute precision: float32, or mixed_float16 (with loss scaling) / mixed_bfloat16 for accelerators; variables and masks stay float32.",
                                  choices=("float32", "mixed_float16", "mixed_bfloat16"))
    jit_compile: str = option(
        "auto", "Compile the training step with XLA: on, off, or auto (on where measured faster: models without "
        "convolutions, in runs of 2,000 iterations or more, on a single CPU device; off on GPUs, TPUs and several "
        "replicas until measured there).",
        choices=("auto", "on", "off"), hashed=False)
    parallel_runs: str = option(
        "auto", "Train up to N independent runs side by side in one compiled loop (in the IMP loop the tickets "
        "of a level beside the controls of the level before, over the replicates this process runs; the two "
        "copies of a stability pair), each with "
        "its own data, mask, optimizer, checkpoints and files, so each result equals the run trained alone: N, "
        "or auto (8 where measured faster: models without convolutions, in runs of 2,000 iterations or more, "
        "on a single CPU device; 1 elsewhere until measured there).", hashed=False)
    progress: bool = option(True, "Show a progress bar per level (plain lines when not on a terminal).", hashed=False)
    dry_run: bool = option(False, "Validate, build the model and print the pruning schedule; train nothing, read no data.", hashed=False)
    export_final: bool = option(False, "When the run finishes, export each replicate's last imp level (dense and sparse SavedModel, TFLite, ticket) to <experiment>/export/.", hashed=False)

    def validate(self):
        _require(bool(self.output_dir), "output_dir", "must not be empty")
        _require(self.replicates > 0, "replicates", f"must be > 0, got {self.replicates}")
        _require(-1 <= self.replicate < self.replicates, "replicate",
                 f"must be -1 (all) or in [0, --replicates={self.replicates}), got {self.replicate}")
        _require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        _require("/" not in self.experiment_name and self.experiment_name not in (".", ".."),
                 "experiment_name", f"must be a plain folder name, got {self.experiment_name!r}")
        _require(self.parallel_runs == "auto" or (self.parallel_runs.isdigit() and int(self.parallel_runs) >= 1),
                 "parallel_runs", f"must be auto or a whole number >= 1, got {self.parallel_runs!r}")
        _require(self.num_cpu_devices >= 0, "num_cpu_devices", f"must be >= 0, got {self.num_cpu_devices}")
        _require(not self.tpu or self.strategy == "tpu", "tpu", "applies only to --strategy=tpu")


def check_int64(options):
    """Refuses integers TensorFlow's int64 counters cannot hold (an iteration count of 1e20 never ends)."""
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, int) and not isinstance(item, bool):
                _require(-INT64_MAX <= item <= INT64_MAX, f.name, f"{item} does not fit the int64 step counter (at most {INT64_MAX})")


def canonical(value):
    """A field value as JSON gives it back (tuples as lists), so stored and current values compare equal."""
    return list(value) if isinstance(value, tuple) else value


def stored_differences(kinds, current: Dict[str, Any], stored: Dict[str, Any]) -> list:
    """Names of the hashed fields of `kinds` whose value in `stored` (a config.json or
    branch.json) differs from `current`; a field missing from `stored` was added later
    and is compared at its default, which must reproduce what runs did before it existed."""
    differing = []
    for kind in kinds:
        for f in dataclasses.fields(kind):
            if f.metadata["hashed"] and canonical(stored.get(f.name, f.default)) != canonical(current[f.name]):
                differing.append(f.name)
    return differing


def digest(values: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "pruning": PruningConfig,
    "training": TrainingConfig,
    "run": RunConfig,
}


HASHED = frozenset(f.name for kind in SECTIONS.values() for f in dataclasses.fields(kind) if f.metadata["hashed"])


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment: one section per concern."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    pruning: PruningConfig = dataclasses.field(default_factory=PruningConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def __post_init__(self):
        self.validate()

    def validate(self):
        for section in SECTIONS:
            check_int64(getattr(self, section))
            getattr(self, section).validate()
        _require(
            self.pruning.rewind_iteration < self.training.iterations, "rewind_iteration",
            f"must be < --iterations ({self.training.iterations}), got {self.pruning.rewind_iteration}",
        )

    @classmethod
    def from_flat(cls, values: Dict[str, Any]) -> "ExperimentConfig":
        """Builds a config from {field name: value}; unknown names are an error."""
        known = {f.name: section for section, kind in SECTIONS.items() for f in dataclasses.fields(kind)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"--{unknown[0]}: unknown setting")
        sections = {section: {} for section in SECTIONS}
        for name, value in values.items():  # JSON gives lists where the fields hold tuples
            sections[known[name]][name] = tuple(value) if isinstance(value, list) else value
        return cls(**{s: SECTIONS[s](**v) for s, v in sections.items()})

    def flat(self) -> Dict[str, Any]:
        """{field name: value} over every section."""
        return {name: value for section in SECTIONS for name, value in dataclasses.asdict(getattr(self, section)).items()}

    def replace(self, **values) -> "ExperimentConfig":
        """A copy with some fields (by flat name) changed, validated again."""
        return ExperimentConfig.from_flat({**self.flat(), **values})

    def hashed_values(self) -> Dict[str, Any]:
        """The non-default values that change what the experiment computes."""
        result = {}
        for section, kind in SECTIONS.items():
            for f in dataclasses.fields(kind):
                value = getattr(getattr(self, section), f.name)
                if f.metadata["hashed"] and value != f.default:
                    result[f.name] = list(value) if isinstance(value, tuple) else value
        return result

    def experiment_hash(self) -> str:
        """The hash in the default experiment name: of the non-default hashed values, so
        adding a setting (at a default that reproduces the old behaviour) keeps every name."""
        return digest(self.hashed_values())

    def fingerprint(self) -> str:
        """A hash of every hashed value, defaults included: changes when a default does."""
        return digest({name: canonical(value) for name, value in self.flat().items() if name in HASHED})

    def differences(self, stored_flat: Dict[str, Any]) -> list:
        """Hashed settings in which a stored config ('config' of config.json) differs from this one."""
        return stored_differences(SECTIONS.values(), self.flat(), stored_flat)

    @property
    def experiment_name(self) -> str:
        return self.run.experiment_name or f"{self.model.model}-{self.data.dataset}-{self.experiment_hash()}"

    def data_seed(self, replicate: int) -> int:
        """The seed of replicate `replicate`'s training data order."""
        base = self.run.seed if self.data.data_seed < 0 else self.data.data_seed
        return derive_seed(base + replicate, "data")

    @property
    def variants(self) -> Tuple[str, ...]:
        return ("imp",) + tuple(c for c in CONTROLS if c in self.pruning.controls)
