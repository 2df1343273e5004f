"""franken: new tasks learned in the weights a ticket freed, the ticket's own frozen (PackNet-style).

From a finished ticket of task A (a pruned level of the parent: its final weights and
mask m_A), task B trains only the weights A freed (m_A == 0 in every prunable kernel
of the shared layers, every layer but the output layer); A's surviving kernels, and
every bias and BatchNorm parameter and statistic of the shared layers, are frozen for
good (training/franken.py). B computes with A's weights plus its own, as PackNet; A
computes with its own only, so its logits are the parent ticket's, bit for bit
(checked on A's test set, `bit_identical`).

Task B is the main command's data override (--dataset=fashion_mnist, --classes=5-9),
or --tasks=fashion_mnist,mnist:5-9 chains tasks 1, 2, ... after A (classes written
with '-' and '+', e.g. mnist:0-2+7), each in the weights all before it left free; a
chain needs --prune_b > 0 (else the next task gets nothing). Every task's inputs must
be A's shape. Each later task is a part of the cell (key <variant>_task<t>).

  --head=separate  the task's own output layer (a fresh seeded draw, all its own);
  --head=shared    the output layer extended with the task's classes: the earlier
                   tasks' columns (their masked output weights and biases) frozen, the
                   task's new columns its own; it trains with a softmax over all the
                   columns (its classes first), so earlier classes act as negatives.

Either way each task is evaluated on its own columns with its own network (task s:
the weights of tasks 0..s, its head); with the shared head `joint_test_accuracy` is
the whole network over every column on the union of the tasks' test sets, labels
offset (the class-incremental view). A task's starting values are its own θ0, a fresh
seeded draw of the architecture's initialiser (<variant>_task<t>_theta_0.npz).

--prune_b=RATE (with --prune_b_rounds=N): after the task trains, RATE of its own
weights per layer are pruned by magnitude within its share (the output layer at
RATE/2, the paper's convention), the survivors reset to its θ0 and retrained, N
times (round k keeps round(n (1-RATE)^k) of the n it started with, the IMP rule).

Runs of part t, each trained from iteration 0 on the task's data with the parent's
schedule (or the overrides): <v>_task<t> (then _round<k>), the Frankenmodel;
<v>_task<t>_dense_alone, a dense network of the same architecture from the task's θ0;
<v>_task<t>_same_budget_alone, the task's final mask from its θ0, the earlier tasks'
weights absent (zero). Rows (franken.csv), measured from the Frankenmodel after task
t (`after_task`): one per task 0..t (run 'franken') and the two baselines of task t.
The last part exports <v>_saved_model/ in the branch folder: signatures task_0 ...
task_T, uint8 images to that task's logits, each checked against the Frankenmodel.
"""

import collections
import collections.abc
import dataclasses
import os
from typing import Dict, List, Tuple

import numpy as np

from tf_lottery import branches, config as config_lib
from tf_lottery.branches.base import Branch, Cell
from tf_lottery.config import ConfigError, option
from tf_lottery.errors import UsageError
from tf_lottery.experiment import files
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training import run as run_lib
from tf_lottery.training.hooks import Hook
from tf_lottery.training.run import InitialWeights, RunSpec

DESCRIPTION = ("a Frankenmodel: task A's ticket frozen, new tasks trained in the weights it freed (PackNet), against "
               "dense and equal-budget baselines")
HEADS = ("separate", "shared")
BASELINES = ("dense_alone", "same_budget_alone")
CHECK_IMAGES = 64  # random uint8 images every export signature is checked on
COLUMNS = ("after_task", "task", "task_name", "run", "test_accuracy", "test_accuracy_before", "bit_identical",
           "joint_test_accuracy", "owned_weights", "owned_fraction", "final_test_accuracy", "early_stop_iteration",
           "early_stop_test_accuracy", "iterations_trained", "iterations_spent", "train_seconds")


def parse_task(text: str) -> Tuple[str, str]:
    """'mnist:0-2+7' -> ('mnist', '0-2,7'); 'fashion_mnist' -> ('fashion_mnist', '')."""
    name, _, classes = text.strip().partition(":")
    if not name:
        raise ConfigError(f"--tasks: expected dataset[:classes] specs like fashion_mnist,mnist:5-9, got {text!r}")
    return name, config_lib.canonical_classes(classes.replace("+", ","))


def task_text(dataset: str, classes: str) -> str:
    return f"{dataset}:{classes.replace(',', '+')}" if classes else dataset


@dataclasses.dataclass(frozen=True)
class FrankenOptions:
    head: str = option("separate", "Output layer of a new task: separate (its own, fresh) or shared (the output "
                       "layer extended with its classes, earlier columns frozen).", choices=HEADS)
    prune_b: float = option(0.0, "After a new task trains, prune this fraction of its own weights per layer by "
                            "magnitude (output layer at half of it), reset the rest to its θ0 and retrain "
                            "(0: it keeps every freed weight).")
    prune_b_rounds: int = option(1, "Rounds of --prune_b (round k keeps (1-rate)^k of the task's share).")
    tasks: Tuple[str, ...] = option((), "New tasks chained after A, dataset[:classes] each (classes as 5-9 or "
                                    "0-2+7), e.g. fashion_mnist,mnist:5-9 (default: one task, --dataset and "
                                    "--classes).")

    def __post_init__(self):
        # One spelling per task, so mnist:5-9 and mnist:5+6+7+8+9 are one folder.
        object.__setattr__(self, "tasks", tuple(task_text(*parse_task(t)) for t in self.tasks if t.strip()))

    def validate(self):
        if self.head not in HEADS:
            raise ConfigError(f"--head: expected one of {', '.join(HEADS)}, got {self.head!r}")
        if not 0.0 <= self.prune_b < 1.0:
            raise ConfigError(f"--prune_b: must be in [0, 1), got {self.prune_b}")
        if self.prune_b_rounds < 1:
            raise ConfigError(f"--prune_b_rounds: must be >= 1, got {self.prune_b_rounds}")
        if self.prune_b_rounds != 1 and self.prune_b == 0:
            raise ConfigError("--prune_b_rounds: applies only with --prune_b > 0")
        if len(self.tasks) > 1 and self.prune_b == 0:
            raise ConfigError(f"--tasks: chaining {len(self.tasks)} tasks needs --prune_b > 0: without pruning a "
                              "task keeps every weight it was given and the next one gets none")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("--tasks: lists a task twice")


class ShareRound(Hook):
    """At the end of a Frankenmodel round: the task's share for the next round, pruned by magnitude."""

    def __init__(self, path: str, first: str, rates_of, round_: int):
        self.path, self.first, self.rates_of, self.round = path, first, rates_of, round_

    def on_end(self, run, result):
        from tf_lottery.training import franken as franken_lib  # pylint: disable=import-outside-toplevel

        initial = masks_lib.counts(files.read_masks(self.first))
        masks = franken_lib.share_masks(masks_lib.prunable_values(run.model), masks_lib.get_masks(run.model),
                                        initial, self.rates_of(run.model), self.round)
        if run.bench.is_chief:  # rewritten if the round resumes: always from the weights it ends with
            files.write_masks(self.path, masks)


class _Ones(collections.abc.Mapping):
    """All-ones masks shaped like a mask file's (read on first use)."""

    def __init__(self, like):
        self.like = like

    def __getitem__(self, name):
        return np.ones_like(self.like[name])

    def __iter__(self):
        return iter(self.like)

    def __len__(self):
        return len(self.like)


@branches.register
class Franken(Branch):
    name = "franken"
    description = DESCRIPTION
    Options = FrankenOptions
    columns = COLUMNS
    pruned_levels_only = True
    new_classes = True

    def __init__(self, parent, options=None, overrides=None):
        super().__init__(parent, options, overrides)
        self.task_configs = self._task_configs()  # task 0 (A, the parent's) first
        self.task_names = [task_text(c.data.dataset, c.data.classes) for c in self.task_configs]
        self.infos = [parent.dataset] + [self._describe(c) for c in self.task_configs[1:]]
        if parent.dataset.input_shape:
            from tf_lottery.lottery.plan import build_model  # pylint: disable=import-outside-toplevel
            from tf_lottery.training import franken as franken_lib  # pylint: disable=import-outside-toplevel

            franken_lib.check_supported(build_model(self.config, parent.dataset))
        self._rounds = {}  # run directory -> its ShareRound hook

    # Tasks -------------------------------------------------------------------------

    def _task_configs(self):
        given = [k for k in ("dataset", "classes") if k in self.overrides]
        if self.options.tasks and given:
            raise UsageError(f"--tasks: names every task after A; give it without --{given[0]}")
        config = self.config
        chain = ([config.replace(dataset=d, classes=c) for d, c in map(parse_task, self.options.tasks)]
                 if self.options.tasks else [config])
        a = self.parent.config.data
        for t, task in enumerate(chain, 1):
            if (task.data.dataset, task.data.classes) == (a.dataset, a.classes):
                raise UsageError(f"--{'tasks' if self.options.tasks else 'dataset'}: task {t} is task A's own data "
                                 f"({task_text(a.dataset, a.classes)}); name a new task with --dataset/--classes "
                                 "or --tasks")
        return [self.parent.config.replace(progress=config.run.progress)] + chain

    def _describe(self, task):
        from tf_lottery import data  # pylint: disable=import-outside-toplevel

        info = data.for_config(task.data, read=False)
        mine, theirs = tuple(info.input_shape), tuple(self.parent.dataset.input_shape)
        if theirs and mine != theirs:
            flag = "tasks" if self.options.tasks else "dataset"
            raise UsageError(f"--{flag}: {task_text(task.data.dataset, task.data.classes)} has inputs {mine}, task A "
                             f"{theirs}; a Frankenmodel's tasks share their inputs")
        return info

    @property
    def last_task(self) -> int:
        return len(self.task_configs) - 1

    def wrap(self, task: int):
        from tf_lottery.training import franken as franken_lib  # pylint: disable=import-outside-toplevel

        return franken_lib.franken_wrap(self.options.head, [self.class_count(s) for s in range(task)])

    def class_count(self, task: int) -> int:
        return int(self.infos[task].num_classes)

    # Parts, files and runs -----------------------------------------------------------

    def parts(self, cell: Cell) -> List[Cell]:
        return [dataclasses.replace(cell, part=t) for t in range(1, self.last_task + 1)]

    def key(self, cell: Cell) -> str:
        return f"{cell.variant}_task{cell.part}"

    def _file(self, cell: Cell, task: int, what: str) -> str:
        return os.path.join(self.folder(cell).directory, f"{cell.variant}_task{task}_{what}")

    def theta_path(self, cell, task):
        return self._file(cell, task, "theta_0.npz")

    def init_path(self, cell, task):
        return self._file(cell, task, "initial_weights.npz")

    def mask_path(self, cell, task, round_):
        return self._file(cell, task, f"mask_round{round_}.npz")

    def export_path(self, cell):
        return os.path.join(self.folder(cell).directory, f"{cell.variant}_saved_model")

    @property
    def rounds(self) -> int:
        return self.options.prune_b_rounds if self.options.prune_b > 0 else 0

    def run_name(self, cell, task, round_=0):
        return f"{cell.variant}_task{task}" + (f"_round{round_}" if round_ else "")

    def _mask_file(self, cell, task, round_):
        missing = ("written when the task's Frankenmodel is prepared" if round_ == 0 else
                   f"written when round {round_ - 1} of task {task} ends; run the branch again")
        return masks_lib.MaskFile(self.mask_path(cell, task, round_), missing,
                                  recover=f"delete {self.folder(cell).directory} to compute that cell again")

    def franken_specs(self, cell: Cell, task: int) -> List[RunSpec]:
        """The Frankenmodel's runs of `task`: round 0, then one per --prune_b round."""
        specs = []
        for k in range(self.rounds + 1):
            name = self.run_name(cell, task, k)
            spec = RunSpec(directory=self.folder(cell).run(name).directory, config=self.task_configs[task],
                           replicate=cell.replicate, level=cell.level, name=name,
                           masks=self._mask_file(cell, task, k),
                           init=InitialWeights.from_file(self.init_path(cell, task), f"task{task}_start"),
                           data_seed=self.config.data_seed(cell.replicate), model_wrap=self.wrap(task))
            if k < self.rounds:
                self._rounds[spec.directory] = ShareRound(self.mask_path(cell, task, k + 1),
                                                          self.mask_path(cell, task, 0), self._share_rates, k + 1)
            specs.append(spec)
        return specs

    def _share_rates(self, model):
        from tf_lottery.training import franken as franken_lib  # pylint: disable=import-outside-toplevel

        return franken_lib.share_rates(model, self.options.prune_b)

    def runs(self, cell: Cell) -> List[RunSpec]:
        task, config = cell.part, self.task_configs[cell.part]
        theta = InitialWeights.from_file(self.theta_path(cell, task), f"task{task}_theta_0")
        final = self._mask_file(cell, task, self.rounds)
        baselines = [RunSpec(directory=self.folder(cell).run(f"{self.run_name(cell, task)}_{kind}").directory,
                             config=config, replicate=cell.replicate, level=cell.level,
                             name=f"{self.run_name(cell, task)}_{kind}", masks=masks, init=theta,
                             data_seed=self.config.data_seed(cell.replicate))
                     for kind, masks in zip(BASELINES, (_Ones(final), final))]
        return self.franken_specs(cell, task) + baselines

    def hooks(self, spec: RunSpec) -> List[Hook]:
        return [self._rounds[spec.directory]] if spec.directory in self._rounds else []

    # Preparing a task: its θ0, its start in the Frankenmodel and its share -------------------

    def prepare(self, cell: Cell, bench):
        from tf_lottery.training import franken as franken_lib  # pylint: disable=import-outside-toplevel
        from tf_lottery.training.workbench import fresh_weights  # pylint: disable=import-outside-toplevel

        task, config = cell.part, self.task_configs[cell.part]
        if task > 1:  # the earlier task's Frankenmodel first (normally trained already: only read)
            for spec in self.franken_specs(cell, task - 1):
                run_lib.train(spec, bench, self.hooks(spec))
        theta_path = self.theta_path(cell, task)
        if bench.is_chief and not os.path.exists(theta_path):
            names, values = fresh_weights(config, bench.splits(config).info,
                                          self.cell_seed(cell, f"franken_task{task}"))
            os.makedirs(os.path.dirname(theta_path), exist_ok=True)
            files.write_weights(theta_path, names, values)
        bench.barrier()
        init_path, share_path = self.init_path(cell, task), self.mask_path(cell, task, 0)
        if not (os.path.exists(init_path) and os.path.exists(share_path)):
            model = bench.trainer(config, self.wrap(task)).model
            state = franken_lib.state_of(self.trained_model(cell, task - 1, bench))
            names, values = franken_lib.initial_values(model, state, files.read_weights(theta_path))
            if bench.is_chief:
                files.write_weights(init_path, names, values)
                files.write_masks(share_path, franken_lib.free_masks(model, state))
        bench.barrier()

    def trained_model(self, cell: Cell, task: int, bench):
        """Task `task`'s finished network: the parent's ticket for 0, else its last Frankenmodel round."""
        from tf_lottery.training import checkpoints  # pylint: disable=import-outside-toplevel

        if task == 0:
            model = bench.trainer(self.task_configs[0]).model
            weights = self.parent.final_weights(cell.replicate, cell.level, cell.variant)
            masks = self.parent.masks(cell.replicate, cell.level, cell.variant)
            source = self.parent.run(cell.replicate, cell.level, cell.variant).final_weights
        else:
            model = bench.trainer(self.task_configs[task], self.wrap(task)).model
            run = self.folder(cell).run(self.run_name(cell, task, self.rounds))
            weights, masks, source = files.read_weights(run.final_weights), files.read_masks(run.mask), run.final_weights
        checkpoints.assign_weights(model, weights, source=source)
        masks_lib.apply_masks(model, masks)
        return model

    # Measuring --------------------------------------------------------------------

    def measure(self, cell: Cell, finished: Dict[str, dict], bench) -> List[dict]:
        from tf_lottery.training import franken as franken_lib  # pylint: disable=import-outside-toplevel
        from tf_lottery.training.combination import accuracy  # pylint: disable=import-outside-toplevel

        task = cell.part
        model = self.trained_model(cell, task, bench)
        splits = [bench.splits(self.task_configs[s]) for s in range(task + 1)]
        batch = self.config.data.eval_batch_size

        infos = [sp.info for sp in splits]  # with the statistics the tasks' pipelines normalise with
        views = [franken_lib.logits(franken_lib.view_model(model, s), splits[s].test_images, infos[s], batch)
                 for s in range(task + 1)]
        before = franken_lib.logits(self.trained_model(cell, 0, bench), splits[0].test_images, infos[0], batch)
        joint = None
        if self.options.head == "shared":
            whole = franken_lib.view_model(model, task, "all")
            offsets = np.cumsum([0] + [self.class_count(s) for s in range(task)])
            correct = sum(np.sum(np.argmax(franken_lib.logits(whole, sp.test_images, infos[s], batch), -1)
                                 == sp.test_labels + offsets[s]) for s, sp in enumerate(splits))
            joint = float(correct / sum(len(sp.test_labels) for sp in splits))
        spent = [self.parent.iterations_spent(cell.replicate, cell.level, cell.variant)]
        for s in range(1, task + 1):
            spent.append(spent[-1] + sum(int(self._result(cell, s, k)["iterations_trained"])
                                         for k in range(self.rounds + 1)))
        rows = []
        for s, owned in enumerate(franken_lib.ownership(model)):
            own = (self._result(cell, s, self.rounds) if s
                   else self.parent.result(cell.replicate, cell.level, cell.variant))
            rows.append({**self._row(cell, s, "franken", own), "density": owned["used"] / owned["total"],
                         "test_accuracy": accuracy(views[s], splits[s].test_labels),
                         "owned_weights": owned["owned"], "owned_fraction": owned["owned"] / owned["total"],
                         "joint_test_accuracy": joint, "iterations_spent": spent[s]})
        rows[0].update(test_accuracy_before=accuracy(before, splits[0].test_labels),
                       bit_identical=bool(before.shape == views[0].shape and before.tobytes() == views[0].tobytes()))
        for kind in BASELINES:
            result = finished[f"{self.run_name(cell, task)}_{kind}"]
            rows.append({**self._row(cell, task, kind, result), "density": result["density"],
                         "test_accuracy": result["final_test_accuracy"], "owned_weights": result["remaining_weights"],
                         "owned_fraction": result["density"],
                         "iterations_spent": int(result["iterations_trained"]) + (
                             spent[task] if kind == "same_budget_alone" else 0)})
        if task == self.last_task and bench.is_chief:
            self.export(cell, model, infos)
        return rows

    def _result(self, cell, task, round_):
        return files.read_json(self.folder(cell).run(self.run_name(cell, task, round_)).result)

    def _row(self, cell, task, run, result) -> dict:
        return {"after_task": cell.part, "task": task, "task_name": self.task_names[task], "run": run,
                "test_accuracy_before": None, "bit_identical": None, "joint_test_accuracy": None,
                **{k: result.get(k) for k in ("final_test_accuracy", "early_stop_iteration", "early_stop_test_accuracy",
                                              "iterations_trained", "train_seconds")}}

    def export(self, cell: Cell, model, infos):
        """The Frankenmodel's SavedModel, one signature per task, checked; export.json beside it."""
        from tf_lottery import distribute  # pylint: disable=import-outside-toplevel
        from tf_lottery.lottery.plan import build_model  # pylint: disable=import-outside-toplevel
        from tf_lottery.training import franken as franken_lib  # pylint: disable=import-outside-toplevel
        from tf_lottery.utils import write_json  # pylint: disable=import-outside-toplevel

        path = self.export_path(cell)
        with distribute.precision_policy("float32"):
            plains = [build_model(self.task_configs[s], infos[s]) for s in range(self.last_task + 1)]
            images = np.random.default_rng(0).integers(0, 256, size=(CHECK_IMAGES, *infos[0].input_shape),
                                                       dtype=np.uint8)
            metadata = {"experiment": self.parent.name, "replicate": cell.replicate, "level": cell.level,
                        "variant": cell.variant, "head": self.options.head, "model": self.config.model.model,
                        "tasks": [{"signature": f"task_{s}", "task": self.task_names[s],
                                   "num_classes": self.class_count(s), "mean": list(infos[s].mean),
                                   "std": list(infos[s].std), "classes": list(infos[s].classes)}
                                  for s in range(self.last_task + 1)],
                        "preprocessing": "(uint8 image / 255 - mean) / std, per channel, of each task's dataset"}
            differences = franken_lib.export_saved_model(model, plains, infos, path, metadata, images)
        write_json(path + ".json", {**metadata, "path": path, "max_abs_diff": differences})
