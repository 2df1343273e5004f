"""One way to answer --help for every tf_lottery command, without starting TensorFlow.

Every command (`tf-lottery train|dry-run|branch|report|export` and the `python -m`
forms) prints the same page: a usage line, its purpose, one example, its own flags
grouped by section with their choices and defaults, and the names it accepts
(models, datasets, branches, formats). `--helpfull` adds absl's own flags.

The registries of models and branches import TensorFlow (seconds), so the names
are listed from the catalogue below unless the registry is already loaded;
tests/test_cli_help.py checks the catalogue against the registries.
"""

import dataclasses
import glob
import os
import re
import shutil
import sys
import textwrap
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

CONSOLE = "tf-lottery"
HELP_ARGS = ("--help", "-h", "-?", "--helpshort")
HELPFULL_ARGS = ("--helpfull",)


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand of `tf-lottery`: its `python -m` module, one line of purpose and an example's arguments."""

    name: str
    module: str
    summary: str
    example: str


COMMANDS: Dict[str, Command] = {c.name: c for c in (
    Command("train", "tf_lottery.main", "Train an experiment: IMP's levels x replicates and their controls; a rerun "
            "resumes it and trains only what is missing.", "--flagfile=flags/quickstart.cfg"),
    Command("dry-run", "tf_lottery.main", "Check the flags, build the model and print the pruning schedule and the "
            "experiment folder; train nothing.", "--flagfile=flags/quickstart.cfg"),
    Command("branch", "tf_lottery.branch", "Run a branch (an analysis or new kind of run: reinit, stability, transfer, "
            "...) over a finished experiment.", "--experiment_dir=runs/quickstart --branch=random_prune --levels=2"),
    Command("report", "tf_lottery.report", "Write the figures and tables (report.md, report.html) of one or more "
            "experiments.", "--experiment_dir=runs/quickstart"),
    Command("export", "tf_lottery.export", "Export a finished level as SavedModel, sparse SavedModel, TFLite or a "
            "ticket file, or a structured ticket as a smaller dense network, each checked against the trained model.",
            "--experiment_dir=runs/quickstart --level=best --format=tflite,ticket"),
)}

# What the registries hold (checked by tests/test_cli_help.py): listed without importing TensorFlow.
MODELS = ("conv2", "conv2_dropout", "conv4", "conv4_dropout", "conv6", "conv6_dropout", "lenet300_100", "lenet5", "lstm_lm",
          "mlp", "policy_mlp", "resnet18", "resnet20", "transformer_lm", "vgg19")
BRANCHES = {
    "combine": "tickets combined: ensembles of replicates, weight averages of copies from one start, mask unions and "
               "intersections retrained; each against the single ticket of the same budget",
    "franken": "a Frankenmodel: task A's ticket frozen, new tasks trained in the weights it freed (PackNet), against "
               "dense and equal-budget baselines",
    "gmp": "gradual magnitude pruning by tfmot (Zhu & Gupta 2017) to the parent's per-layer densities",
    "pai": "pruning at initialisation (SNIP, GraSP, SynFlow, magnitude, random) to each level's counts, trained once "
           "from θ0; Frankle et al.'s ablations",
    "prune_during_training": "one run that prunes a little every epoch to the level's per-layer densities; kept, "
                             "reset or rewound",
    "random_prune": "a random mask at the parent's per-weight densities, the parent's initial weights (the paper's "
                    "control)",
    "reinit": "the parent's mask, survivors randomly reinitialised (the paper's control) or --init's values",
    "retrain_ticket": "the parent's run (mask, initial weights, start, data order) trained to the end of its schedule",
    "stability": "two copies from the same weights with different data orders, and the error along the line between "
                 "them",
    "supermask": "masks that work without training the weights (Zhou et al. 2019): a criterion's mask on θ0, or a "
                 "mask learned over frozen weights",
    "transfer": "the source's ticket, its mask alone and a random ticket, trained on another dataset or schedule",
}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_METAVARS = {"dataset": "NAME", "model": "NAME", "branch": "NAME", "experiment_name": "NAME", "level": "LEVEL",
             "levels": "LEVELS", "replicates": "REPLICATES", "tpu": "ADDRESS", "output": "DIR"}


def model_names() -> List[str]:
    """The registered models: from the registry when it is loaded, else from the catalogue."""
    models = sys.modules.get("tf_lottery.models")
    return list(models.names()) if models is not None and hasattr(models, "names") else list(MODELS)


def branch_descriptions() -> Dict[str, str]:
    """{branch name: one line} of the registered branches (the catalogue while the registry is not loaded)."""
    registry = sys.modules.get("tf_lottery.branches")
    if registry is None or not hasattr(registry, "names"):
        return dict(BRANCHES)
    return {name: registry.get(name).description for name in registry.names()}


def flagfiles() -> List[str]:
    """The flagfiles shipped in the repository's flags/ folder, as paths relative to it."""
    return sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "flags", "*.cfg")))


def _flagfile_datasets() -> List[str]:
    names = []
    for path in flagfiles():
        with open(os.path.join(REPO, path)) as f:
            names += [line.strip()[len("--dataset="):] for line in f if line.strip().startswith("--dataset=")]
    return names


def data_dir(argv: Sequence[str] = ()) -> str:
    """The TFDS folder a command looks in: --data_dir=... in `argv`, else $TFDS_DATA_DIR or ~/tensorflow_datasets."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("--data_dir=")]
    return os.path.expanduser(given[-1] if given else os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def prepared_datasets(directory: str) -> List[str]:
    """Datasets prepared in the TFDS folder `directory` (those with a dataset_info.json), by name."""
    found = glob.glob(os.path.join(directory, "*", "*", "dataset_info.json"))
    found += glob.glob(os.path.join(directory, "*", "*", "*", "dataset_info.json"))
    return sorted({os.path.relpath(p, directory).split(os.sep)[0] for p in found})


def datasets_line(argv: Sequence[str] = ()) -> str:
    """The datasets a command knows of: those prepared locally, and those a flagfile names."""
    directory = data_dir(argv)
    prepared = prepared_datasets(directory)
    others = sorted(set(_flagfile_datasets()) - set(prepared))
    parts = [f"{', '.join(prepared)} (prepared in {directory})" if prepared else f"none prepared in {directory}"]
    if others:
        parts.append(f"{', '.join(others)} (named by a flagfile, not prepared there)")
    return "; ".join(parts) + ("; any other tensorflow-datasets image classification or text set by name, "
                               "or gym:<environment id> (e.g. gym:CartPole-v1)")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One flag on the page: how to write it, what it does, its default."""

    usage: str
    help: str
    default: Optional[str] = None


def _show(value) -> Optional[str]:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def entry(flag, choices: Sequence[str] = (), extra: str = "") -> Entry:
    """The page's entry for an absl flag; `choices` for a list flag whose items are chosen from a set."""
    from absl import flags  # pylint: disable=import-outside-toplevel

    parser = flag.parser
    if isinstance(flag, flags.BooleanFlag):
        usage = f"--[no]{flag.name}"
    elif getattr(parser, "enum_values", None):
        usage = f"--{flag.name}={{{','.join(parser.enum_values)}}}"
    elif isinstance(parser, flags.ListParser):
        usage = f"--{flag.name}={{{','.join(choices)}}},..." if choices else f"--{flag.name}=A,B,..."
    else:
        metavar = {"int": "INT", "float": "FLOAT"}.get(parser.flag_type().split()[-1])
        if metavar is None:
            metavar = _METAVARS.get(flag.name, "DIR" if flag.name.endswith("_dir") else "TEXT")
        usage = f"--{flag.name}={metavar}" + (" (repeatable)" if isinstance(flag, flags.MultiFlag) else "")
    # absl adds "<a|b>: " before an enum's help and a note after a repeatable flag's: the usage says both.
    text = re.sub(r"^<[^>]*>: ", "", flag.help.rstrip())
    text = re.sub(r";\s*repeat this option to specify a list of values$", "", text)
    if extra:
        text = f"{text} {extra}"
    return Entry(usage, text, _show(flag.default))


def flag_entries(flag_values, names: Iterable[str], choices: Optional[Dict[str, Sequence[str]]] = None,
                 extra: Optional[Dict[str, str]] = None) -> List[Entry]:
    choices, extra = choices or {}, extra or {}
    return [entry(flag_values[n], choices.get(n, ()), extra.get(n, "")) for n in names if n in flag_values]


def absl_entries(flag_values, own: Iterable[str]) -> List[Entry]:
    """Entries for the flags of `flag_values` that are not the command's own (absl's logging, debugging...)."""
    own = set(own)
    return [entry(flag) for name, flag in sorted(flag_values._flags().items())  # pylint: disable=protected-access
            if name == flag.name and name not in own]


def width() -> int:
    return max(60, min(100, shutil.get_terminal_size((100, 24)).columns))


def _wrap(text: str, indent: int) -> List[str]:
    return textwrap.wrap(text, width() - indent, break_on_hyphens=False, break_long_words=False) or [""]


def _entry_lines(item: Entry) -> List[str]:
    head = f"  {item.usage}" + (f"  (default: {item.default})" if item.default is not None else "")
    return [head] + [" " * 6 + line for line in _wrap(item.help, 6)]


def render(usage: str, purpose: str, example: str, sections: Sequence[Tuple[str, Sequence[Entry]]],
           lists: Sequence[Tuple[str, str]] = (), footer: Sequence[str] = ()) -> str:
    """The help page: usage, purpose, example, flag sections, named lists ('models: ...'), footer paragraphs."""
    wrapped = _wrap(f"usage: {usage}", 4)
    lines = [wrapped[0]] + ["    " + line for line in wrapped[1:]]
    lines += [""] + _wrap(purpose, 0) + ["", "example:", f"  {example}"]
    for title, entries in sections:
        if entries:
            lines += ["", f"{title}:"]
            for item in entries:
                lines += _entry_lines(item)
    if lists:
        lines.append("")
        for title, text in lists:
            wrapped = _wrap(f"{title}: {text}", 2)
            lines += [wrapped[0]] + ["  " + line for line in wrapped[1:]]
    for paragraph in footer:
        lines += [""] + _wrap(paragraph, 0)
    return "\n".join(lines) + "\n"


def requested(argv: Sequence[str]) -> Optional[str]:
    """'help' or 'helpfull' when the arguments (before any `--`) ask for help, else None."""
    for arg in argv:
        if arg == "--":
            break
        if arg in HELPFULL_ARGS:
            return "helpfull"
        if arg in HELP_ARGS:
            return "help"
    return None


def invocation(command: str, prog: Optional[str]) -> str:
    """How the user called `command`: `tf-lottery <command>` from the console, else `python -m <module>`."""
    if prog and prog.startswith(CONSOLE):
        return f"{CONSOLE} {command}"
    return f"python -m {COMMANDS[command].module}"


def example(command: str, prog: Optional[str]) -> str:
    suffix = " --dry_run" if command == "dry-run" and not (prog or "").startswith(CONSOLE) else ""
    return f"{invocation(command, prog)} {COMMANDS[command].example}{suffix}"


HELPFULL_FOOTER = "--helpfull also lists absl's own flags (logging, debugging)."


def errors_footer(prog: str, run_failure: str) -> str:
    """The paragraph every page ends with: how the command fails."""
    return (f"Errors: one line `{prog}: error: ...`; exit code 2 for bad input (nothing is written), 1 for "
            f"{run_failure}; --traceback (or TF_LOTTERY_TRACEBACK=1) adds the whole trace.")


def footer(prog: str, run_failure: str, full: bool = False, absl_flags: bool = False) -> List[str]:
    """The closing paragraphs: errors, and where absl's own flags are (for a command that takes them)."""
    return [errors_footer(prog, run_failure)] + ([HELPFULL_FOOTER] if absl_flags and not full else [])


NO_ABSL_FLAGS = ("absl's own flags", [Entry("(none)", "This command takes only the flags above.")])


def dataset_names(argv: Sequence[str] = ()) -> List[str]:
    """Names of the datasets prepared locally, then of those only a flagfile names."""
    prepared = prepared_datasets(data_dir(argv))
    return prepared + sorted(set(_flagfile_datasets()) - set(prepared))


def overview() -> str:
    """`tf-lottery --help`: the subcommands, one line each."""
    lines = [f"usage: {CONSOLE} <command> [--flag=value ...]", "",
             "The Lottery Ticket Hypothesis laboratory for TensorFlow 2 / tf_keras.", "", "commands:"]
    for command in COMMANDS.values():
        wrapped = _wrap(command.summary, 13)
        lines.append(f"  {command.name:<10} {wrapped[0]}")
        lines += [" " * 13 + line for line in wrapped[1:]]
    lines += ["", f"'{CONSOLE} <command> --help' shows a command's purpose, an example and its flags.",
              f"example: {example('train', CONSOLE)}"]
    return "\n".join(lines) + "\n"
