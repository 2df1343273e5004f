"""Command line of tf_lottery.export (see the package docstring).

    python -m tf_lottery.export --experiment_dir=DIR --level=best --variant=imp --replicate=0 \
        --format=saved_model,sparse_saved_model,tflite,ticket --output=PATH
    python -m tf_lottery.export --help       # or: tf-lottery export --help

A missing experiment, level, variant or replicate, or a bad flag, stops with one
line and exit code 2 before anything is written; an export whose outputs fail
their check stops with one line and exit code 1.
"""

import sys

from absl import flags

from tf_lottery import cli, help as help_lib
from tf_lottery.errors import UsageError
from tf_lottery.export import DEFAULT_TOLERANCE, EXTRA_FORMATS, FILE_NAMES, FORMATS

PROG = "tf_lottery.export"
FORMAT_HELP = {
    "saved_model": "the trained network with its masks folded in; loads without tf_lottery (uint8 images in, "
                   "logits and probabilities out)",
    "sparse_saved_model": "the same serving function, each pruned kernel stored as its survivors and their "
                          "positions: its size falls with density",
    "tflite": "converted with sparsity optimisation; --quantize=dynamic|int8 (int8 reports its top-1 agreement on "
              "the test set)",
    "ticket": "the survivors at θ0 (or θk), the masks and the model's name and flags; tf_lottery.load_ticket(path) "
              "rebuilds the masked model ready to train",
    "structured": "only on request, for --pruning_structure=neurons|channels: the smaller dense network (removed "
                  "units cut out) as saved_model/ and model.tflite; n_of_m: model.tflite with the N:M kernels stored "
                  "sparse, and which kernels TFLite computes sparse",
}
SECTIONS = (("what to export", ("experiment_dir", "level", "tolerance", "variant", "replicate")),
            ("output", ("format", "output", "quantize", "check_examples", "representative_examples", "traceback")))


def define_flags(flag_values: flags.FlagValues):
    flags.DEFINE_string("experiment_dir", None, "Experiment folder written by tf_lottery.main.", flag_values=flag_values)
    flags.DEFINE_string("level", "best", "Level number, 'final' (the last finished level) or 'best' (the sparsest "
                        "level whose early-stop test accuracy, or the task's metric, is within --tolerance of level 0's).",
                        flag_values=flag_values)
    flags.DEFINE_float("tolerance", None, "What a level may lose against level 0 and still be 'best', in the task's "
                       f"metric (default: {DEFAULT_TOLERANCE} accuracy = half a percentage point; 0.02 bits per "
                       "character; 25 in return).", flag_values=flag_values)
    flags.DEFINE_enum("variant", "imp", ("imp", "reinit", "random_prune"), "Variant to export.", flag_values=flag_values)
    flags.DEFINE_integer("replicate", 0, "Replicate to export.", flag_values=flag_values)
    flags.DEFINE_list("format", list(FORMATS), f"Formats to write: {', '.join(FORMATS)} (the default), or "
                      f"{', '.join(EXTRA_FORMATS)}.", flag_values=flag_values)
    flags.DEFINE_string("output", "", "Output folder (default: <experiment_dir>/export/replicate_R/level_LL/VARIANT).",
                        flag_values=flag_values)
    flags.DEFINE_enum("quantize", "none", ("none", "dynamic", "int8"), "TFLite quantisation: none (float32), dynamic "
                      "(int8 weights) or int8 (full integer, calibrated on training images).", flag_values=flag_values)
    flags.DEFINE_integer("check_examples", 256, "Random images every export's outputs are checked on.", flag_values=flag_values)
    flags.DEFINE_integer("representative_examples", 256, "Training images that calibrate --quantize=int8.",
                         flag_values=flag_values)
    flags.DEFINE_bool("traceback", False, cli.TRACEBACK_HELP, flag_values=flag_values)


def help_text(prog: str = PROG, full: bool = False) -> str:
    """The --help page."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    sections = [(title, help_lib.flag_entries(flag_values, names, {"format": FORMATS})) for title, names in SECTIONS]
    sections.append(("formats (--format)", [help_lib.Entry(f"{name}: {FILE_NAMES[name]}{'' if '.' in FILE_NAMES[name] else '/'}",
                                                           FORMAT_HELP[name])
                                            for name in FORMATS + EXTRA_FORMATS]))
    if full:
        sections.append(help_lib.NO_ABSL_FLAGS)
    usage = (f"{help_lib.invocation('export', prog)} --experiment_dir=DIR [--level=best|final|L] [--variant=imp] "
             f"[--replicate=0] [--format={','.join(FORMATS)}] [--output=DIR]")
    purpose = (help_lib.COMMANDS["export"].summary + " Writes export.json beside them: what was written, its size and "
               "how closely each output agrees with the trained model.")
    return help_lib.render(usage, purpose, help_lib.example("export", prog), sections,
                           footer=help_lib.footer(prog, "an export whose outputs fail their check", full))


def _describe(name: str, entry: dict) -> str:
    line = f"{name:<20}{entry['path']}  {entry['bytes']:,} bytes"
    if "max_abs_diff" in entry:
        line += f"  max |difference| {entry['max_abs_diff']:.2g}"
    if "top1_agreement" in entry:
        line += f"  top-1 agreement {entry['top1_agreement']:.2%} on {entry['test_examples']} test images"
    if entry.get("delegate") == "none":
        line += "  (XNNPACK refuses it: run with BUILTIN_WITHOUT_DEFAULT_DELEGATES)"
    if "units" in entry:
        line += "  units kept " + ", ".join(f"{k} {v['kept']}/{v['original']}" for k, v in entry["units"].items())
    if "kernels_computed_sparse" in entry:
        line += f"  kernels computed sparse: {', '.join(entry['kernels_computed_sparse']) or 'none (stored sparse, densified)'}"
    if "initial_weights" in entry:
        line += f"  ({entry['initial_weights']})"
    return line


def main(argv=None, prog: str = PROG) -> int:
    """Parses `argv` (sys.argv by default), exports, prints one line per format; returns the exit code."""
    argv = sys.argv if argv is None else argv
    wanted = help_lib.requested(argv[1:])
    if wanted:
        sys.stdout.write(help_text(prog, full=wanted == "helpfull"))
        return 0
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    cli.parse_flags(prog, flag_values, argv)
    with cli.one_line_errors(prog, flag_values.traceback):
        if not flag_values.experiment_dir:
            raise UsageError("--experiment_dir is required")
        from tf_lottery import quiet  # pylint: disable=import-outside-toplevel

        quiet.start_tensorflow()
        from tf_lottery import export  # pylint: disable=import-outside-toplevel

        summary = export.export(
            flag_values.experiment_dir, level=flag_values.level, variant=flag_values.variant,
            replicate=flag_values.replicate, formats=flag_values.format, output=flag_values.output or None,
            quantize=flag_values.quantize, tolerance=flag_values.tolerance,
            check_examples=flag_values.check_examples, representative_examples=flag_values.representative_examples,
        )
    for name, entry in summary["formats"].items():
        print(_describe(name, entry))
    for name, why in summary.get("skipped", {}).items():
        print(f"{name:<19} {why}")
    print(f"exported level {summary['level']} (density {summary['density']:.2%}) of {summary['variant']} "
          f"replicate {summary['replicate']}: {summary['output']}/{export.SUMMARY_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
