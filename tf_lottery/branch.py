r"""tf_lottery.branch: run a branch (an analysis or new kind of run) over a finished experiment.

    python -m tf_lottery.branch --help [--branch=NAME]    # or: tf-lottery branch --help; NAME's options too

    python -m tf_lottery.branch --experiment_dir=runs/lenet300_mnist --branch=reinit \
        [--levels=1,3-5] [--replicates=0,1] [--variants=imp,random_prune] [branch options] \
        [any flag of tf_lottery.main, e.g. --learning_rate=3e-4, to override the parent's] [--dry_run]

Writes replicate_<r>/level_<LL>/branch_<name>_<hash>/ (branch.json, one folder per
run) and <experiment>/branches/<name>.csv. Resumable and idempotent: a second
identical call trains nothing. Bad input stops with one line and exit code 2
before anything is written; a run that fails, with exit code 1.
"""

import dataclasses
import sys
from typing import List, Sequence

import tf_lottery  # noqa: F401  (selects tf_keras before TensorFlow loads)
from absl import flags

from tf_lottery import cli, quiet
from tf_lottery import config as config_lib
from tf_lottery import flags as flags_lib
from tf_lottery import help as help_lib
from tf_lottery.errors import UsageError
from tf_lottery.utils import spans

PROG = "tf_lottery.branch"
# Flags of tf_lottery.main that shape the parent experiment itself, not a branch's runs.
NOT_OVERRIDES = ("levels", "replicates", "replicate", "controls", "experiment_name", "output_dir", "dry_run",
                 "progress", "export_final")
# The architecture is the parent's masks' shape: a branch cannot change it.
FIXED = tuple(f.name for f in dataclasses.fields(config_lib.ModelConfig))
PRUNING = tuple(f.name for f in dataclasses.fields(config_lib.PruningConfig))
COMMAND_FLAGS = ("experiment_dir", "branch", "levels", "replicates", "variants", "dry_run", "progress", "traceback")


def _branches():
    """The branch registry: it imports TensorFlow, so quietly and only when a branch is needed."""
    if "tf_lottery.branches" not in sys.modules:
        quiet.import_tensorflow()
    from tf_lottery import branches  # pylint: disable=import-outside-toplevel

    return branches


def define_command_flags(flag_values: flags.FlagValues):
    """The branch command's own flags (no TensorFlow needed)."""
    flags.DEFINE_string("experiment_dir", None, "Finished (or partly finished) experiment folder written by tf_lottery.main.",
                        flag_values=flag_values)
    flags.DEFINE_string("branch", None, "Branch to run (the branches are listed below; --branch=NAME --help shows its "
                        "options).", flag_values=flag_values)
    flags.DEFINE_string("levels", "", "Parent levels to branch from, e.g. 1,3-5 (default: every finished level the "
                        "branch applies to).", flag_values=flag_values)
    flags.DEFINE_string("replicates", "", "Parent replicates, e.g. 0,1 (default: every replicate with finished runs).",
                        flag_values=flag_values)
    flags.DEFINE_list("variants", ["imp"], "Parent variants whose runs the branch starts from: "
                      f"{', '.join(config_lib.VARIANTS)}.", flag_values=flag_values)
    flags.DEFINE_bool("dry_run", False, "Check the flags and print the runs the branch would train; train nothing.",
                      flag_values=flag_values)
    flags.DEFINE_bool("progress", True, "Show a progress bar per run (plain lines when not on a terminal).",
                      flag_values=flag_values)
    flags.DEFINE_bool("traceback", False, cli.TRACEBACK_HELP, flag_values=flag_values)


def define_flags(flag_values: flags.FlagValues):
    """Every flag the command parses: its own, every branch's options and the main command's overrides."""
    branches = _branches()
    define_command_flags(flag_values)
    flags_lib.define_option_flags([branches.get(n).Options for n in branches.names()], flag_values)
    flags_lib.define_flags(flag_values, skip=NOT_OVERRIDES)


def _chosen_branch(argv: Sequence[str]):
    """The value of --branch in `argv` (=NAME or NAME as the next argument), or None."""
    for i, arg in enumerate(argv):
        if arg.startswith("--branch="):
            return arg.split("=", 1)[1]
        if arg == "--branch" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def help_text(argv: Sequence[str], prog: str = PROG, full: bool = False) -> str:
    """The --help page; with --branch=NAME in `argv`, that branch's options too (which loads TensorFlow)."""
    command_flags = flags.FlagValues()
    define_command_flags(command_flags)
    sections = [("branch command", help_lib.flag_entries(command_flags, COMMAND_FLAGS))]
    name = _chosen_branch(argv)
    if name:
        branch_class = _branches().get(name)
        options = flags.FlagValues()
        flags_lib.define_option_flags([branch_class.Options], options)
        fields = [f.name for f in dataclasses.fields(branch_class.Options)]
        sections.append((f"options of branch {name} ({branch_class.description})",
                         help_lib.flag_entries(options, fields) or [help_lib.Entry("(none)", "This branch takes no options.")]))
    sections.append(("branches (--branch=NAME; with --help, its options)",
                     [help_lib.Entry(n, d) for n, d in help_lib.branch_descriptions().items()]))
    if full:
        sections.append(help_lib.NO_ABSL_FLAGS)
    sections.append(("overrides of the parent's settings (tf-lottery train's flags; pruning ones only for a branch "
                     "that prunes)",
                     [help_lib.Entry(f"{section}:", " ".join(f"--{f.name}" for f in dataclasses.fields(kind)
                                                           if f.name not in NOT_OVERRIDES + FIXED))
                      for section, kind in config_lib.SECTIONS.items() if section != "model"]))
    lists = [("models", f"{', '.join(help_lib.model_names())} (fixed by the parent's masks)"),
             ("datasets (--dataset, for the parent's input shape and classes)", ", ".join(help_lib.dataset_names(argv)))]
    usage = (f"{help_lib.invocation('branch', prog)} --experiment_dir=DIR --branch=NAME [--levels=1,3-5] "
             "[--replicates=0,1] [branch options] [flags of tf-lottery train] [--dry_run]")
    purpose = (help_lib.COMMANDS["branch"].summary + " Writes replicate_<r>/level_<LL>/branch_<name>_<hash>/ and "
               "<experiment>/branches/<name>.csv; the same call again trains nothing, an interrupted one resumes.")
    return help_lib.render(usage, purpose, help_lib.example("branch", prog), sections, lists,
                           help_lib.footer(prog, "a run that failed", full))


def parse_numbers(flag: str, text: str) -> List[int]:
    """'1,3-5' -> [1, 3, 4, 5]."""
    numbers = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            low, _, high = part.partition("-")
            numbers.extend(range(int(low), int(high or low) + 1))
        except ValueError:
            raise UsageError(f"--{flag}: expected numbers and ranges like 1,3-5, got {text!r}") from None
    if any(n < 0 for n in numbers):
        raise UsageError(f"--{flag}: must be >= 0, got {text!r}")
    return sorted(set(numbers))


def _options(branch_class, flag_values):
    """The branch's options from its flags; options of other branches are refused."""
    own = {f.name for f in dataclasses.fields(branch_class.Options)}
    branches = _branches()
    others = [kind.Options for kind in map(branches.get, branches.names())]
    given = flags_lib.option_values(others, flag_values, only_present=True)
    stray = sorted(set(given) - own)
    if stray:
        raise UsageError(f"--{stray[0]}: not an option of branch {branch_class.name}")
    values = flags_lib.option_values([branch_class.Options], flag_values)
    try:
        return branch_class.Options(**values)
    except TypeError as error:
        raise UsageError(f"--branch={branch_class.name}: {error}") from None


def _overrides(branch_class, flag_values) -> dict:
    given = flags_lib.option_values(config_lib.SECTIONS.values(), flag_values, only_present=True, skip=NOT_OVERRIDES)
    for name in given:
        if name in FIXED:
            raise UsageError(f"--{name}: the parent's masks fix the architecture; a branch cannot change it")
        if name in PRUNING and not branch_class.prunes:
            raise UsageError(f"--{name}: branch {branch_class.name} does not prune, so it has no use for it")
    return {**given, "progress": flag_values.progress}


def cells(parent, branch, flag_values) -> list:
    """The (replicate, level, variant) cells to run, each checked to have finished in the parent.

    Without --replicates, every replicate with a finished run; without --levels, every
    level where all the chosen variants have finished in all of them (pruned levels
    only, for branches that need one). Level 0 takes only the imp variant: the
    controls exist from level 1 on.
    """
    from tf_lottery.branches.base import Cell  # pylint: disable=import-outside-toplevel

    finished = {(int(r["replicate"]), int(r["level"]), r["variant"]) for r in parent.rows()}
    variants = [v.strip() for v in flag_values.variants if v.strip()]

    def at(level):  # level 0 is the dense network alone: the controls start at level 1
        return variants if level > 0 else [v for v in variants if v == "imp"]

    replicates = parse_numbers("replicates", flag_values.replicates) or sorted({r for r, _, _ in finished})
    levels = parse_numbers("levels", flag_values.levels)
    if branch.pruned_levels_only and 0 in levels:
        raise UsageError(f"--levels: level 0 is the dense network; branch {branch.name} needs a pruned level")
    levels = levels or sorted(
        {level for _, level, _ in finished if (level > 0 or not branch.pruned_levels_only) and at(level)
         and all(branch.required_run(Cell(r, level, v)) in finished for r in replicates for v in at(level))})
    if not (replicates and levels and variants):
        where = f"replicate {spans(replicates)}" if replicates else "any replicate"
        raise UsageError(f"--experiment_dir: {parent.paths.root} has no level where {','.join(variants) or 'no variant'} "
                         f"finished in {where} for branch {branch.name} to start from")
    chosen = [Cell(r, level, v) for r in replicates for level in levels for v in at(level)]
    for cell in chosen:
        parent.require_finished(*branch.required_run(cell))
    return chosen


def _check_dataset(parent, branch):
    """A dataset override must fit the parent's masks: the same input shape (any height and
    width for a resolution-agnostic model, but the same channels) and class count (unless
    the branch rebuilds the output layer)."""
    config = branch.config
    if (config.data.dataset, config.data.classes) == (parent.config.data.dataset, parent.config.data.classes):
        return
    from tf_lottery import data, models  # pylint: disable=import-outside-toplevel

    info = data.for_config(config.data, read=False)
    mine, theirs = tuple(info.input_shape), tuple(parent.dataset.input_shape)
    model = config.model.model
    if mine != theirs:
        agnostic = models.spec(model).resolution_agnostic and len(mine) == len(theirs) and mine[-1:] == theirs[-1:]
        if not agnostic:
            why = ("its first layer fits only the parent's channels" if models.spec(model).resolution_agnostic
                   else "it is not resolution-agnostic")
            raise UsageError(f"--dataset: {info.name} has inputs {info.input_shape}, the parent {parent.dataset.input_shape}; "
                             f"model {model} cannot take them ({why})")
    if info.num_classes != parent.dataset.num_classes and not branch.new_classes:
        what = f"{info.name} (classes {config.data.classes})" if config.data.classes else info.name
        raise UsageError(f"--dataset: {what} has {info.num_classes} classes, the parent {parent.dataset.num_classes}; "
                         f"the masks fit only the parent's (branch transfer rebuilds the output layer)")


def prepare(flag_values):
    """Everything checked before TensorFlow starts or a file is written: (branch, cells)."""
    from tf_lottery.experiment.reader import Experiment  # pylint: disable=import-outside-toplevel

    if not flag_values.experiment_dir:
        raise UsageError("--experiment_dir is required")
    branches = _branches()
    if not flag_values.branch:
        raise UsageError(f"--branch is required; known branches: {', '.join(branches.names())}")
    branch_class = branches.get(flag_values.branch)
    parent = Experiment.open(flag_values.experiment_dir)
    branch = branch_class(parent, _options(branch_class, flag_values), _overrides(branch_class, flag_values))
    _check_dataset(parent, branch)
    chosen = cells(parent, branch, flag_values)
    branch.check(chosen)
    return branch, chosen


def describe(branch, chosen: Sequence) -> str:
    lines = [f"branch {branch.name} ({branch.description}) over {branch.parent.paths.root}",
             f"options: {dataclasses.asdict(branch.options) or 'none'}; overrides: "
             f"{branch.hashed_values()['overrides'] or 'none'}; folder: {branch.folder(chosen[0]).directory}"]
    for cell in chosen:
        for part in branch.parts(cell):
            lines.append(f"  replicate {cell.replicate} level {cell.level} {branch.key(part)}: "
                         + ", ".join(spec.name for spec in branch.runs(part)))
    return "\n".join(lines)


def main(argv=None, prog: str = PROG) -> int:
    """Parses `argv` (sys.argv by default), runs the branch; returns the exit code."""
    argv = sys.argv if argv is None else argv
    wanted = help_lib.requested(argv[1:])
    if wanted:
        with cli.one_line_errors(prog):  # an unknown --branch
            sys.stdout.write(help_text(argv[1:], prog, full=wanted == "helpfull"))
        return 0
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    cli.parse_flags(prog, flag_values, argv)
    with cli.one_line_errors(prog, flag_values.traceback):
        branch, chosen = prepare(flag_values)
        if flag_values.dry_run:
            print(describe(branch, chosen))
            return 0
        return _run(branch, chosen)
    return 1  # pragma: no cover (one_line_errors exits)


def _run(branch, chosen) -> int:
    from tf_lottery import main as main_lib  # pylint: disable=import-outside-toplevel

    main_lib.start_tensorflow(branch.config.run)
    from tf_lottery import distribute  # pylint: disable=import-outside-toplevel
    from tf_lottery.branches import runner  # pylint: disable=import-outside-toplevel
    from tf_lottery.training.workbench import Workbench  # pylint: disable=import-outside-toplevel

    strategy = distribute.make_strategy(branch.config.run)
    with Workbench(strategy, branch.parent.paths.root) as bench:
        rows = runner.run_branch(branch, chosen, bench)
    print(f"{len(rows)} row(s): {branch.parent.paths.branch_table(branch.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
