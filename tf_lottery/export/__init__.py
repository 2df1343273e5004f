"""Exports a finished run: dense SavedModel, sparse SavedModel, TFLite and the untrained ticket.

    python -m tf_lottery.export --experiment_dir=runs/lenet300_100-mnist-1234abcd \
        --level=best --variant=imp --replicate=0 \
        --format=saved_model,sparse_saved_model,tflite,ticket --output=exports/lenet

Writes under --output: saved_model/, sparse_saved_model/, model.tflite, ticket.npz
(and, with --format=structured, structured/: the smaller network of a neurons or
channels ticket as saved_model/ and model.tflite, or an n_of_m ticket's model.tflite)
and export.json (what was written, sizes and the output checks). `best_level` is
the rule that picks the "best" ticket; the reports use it too.

Importing this package loads no TensorFlow; `export()` does.
"""

from tf_lottery.experiment.selection import DEFAULT_TOLERANCE, best_level, level_means  # noqa: F401

FORMATS = ("saved_model", "sparse_saved_model", "tflite", "ticket")  # written when --format is not given
EXTRA_FORMATS = ("structured",)  # written only on request: they need a structured ticket
FILE_NAMES = {"saved_model": "saved_model", "sparse_saved_model": "sparse_saved_model",
              "tflite": "model.tflite", "ticket": "ticket.npz", "structured": "structured"}
SUMMARY_FILE = "export.json"


def __getattr__(name):
    # ExportError lives beside the TensorFlow-importing code; fetched lazily to keep this import light.
    if name in ("ExportError", "ExportCheckError"):
        from tf_lottery.export import source  # pylint: disable=import-outside-toplevel

        return getattr(source, name)
    raise AttributeError(name)


def default_output(experiment_dir: str, replicate: int, level: int, variant: str) -> str:
    import os  # pylint: disable=import-outside-toplevel

    return os.path.join(experiment_dir, "export", f"replicate_{replicate}", f"level_{level:02d}", variant)


def export(experiment_dir: str, level="best", variant: str = "imp", replicate: int = 0, formats=FORMATS,
           output: str = None, quantize: str = "none", tolerance: float = None,
           check_examples: int = 256, representative_examples: int = 256):
    """Exports one finished run in the given formats; returns the summary written to export.json.

    Args:
      experiment_dir: an experiment folder written by tf_lottery.main.
      level: a level number, 'best' (best_level with `tolerance`) or 'final' (last finished).
      variant: imp, reinit or random_prune.
      replicate: replicate number.
      formats: any of FORMATS and EXTRA_FORMATS ('structured': the smaller dense network of a
        neurons/channels ticket, or the N:M-sparse TFLite model of an n_of_m ticket).
      output: folder to write into (default: <experiment_dir>/export/replicate_R/level_LL/VARIANT).
      quantize: TFLite quantisation: none, dynamic or int8 (int8 reads the dataset).
      tolerance: tolerance of level='best' in the task's metric (None: the task's default, 0.005 accuracy).
      check_examples: random uint8 images every export's outputs are checked on.
      representative_examples: training images that calibrate int8 quantisation.

    Raises:
      ExportError: with a one-line message, for anything that cannot be exported.
    """
    from tf_lottery.export import exporter, structured  # pylint: disable=import-outside-toplevel

    names = tuple(f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip())
    if any(name in EXTRA_FORMATS for name in names):
        unknown = [name for name in names if name not in FORMATS + EXTRA_FORMATS]
        if unknown:
            raise exporter.ExportError(f"--format: unknown format {', '.join(unknown)}; known: "
                                       f"{', '.join(FORMATS + EXTRA_FORMATS)}")
        others = tuple(name for name in names if name not in EXTRA_FORMATS)
        return structured.export(experiment_dir, level, variant, replicate, others, output, quantize, tolerance,
                                 check_examples, representative_examples)
    return exporter.export(experiment_dir, level, variant, replicate, formats, output, quantize, tolerance,
                         check_examples, representative_examples)


def export_final(experiment_dir: str, replicates: int = 1, formats=FORMATS):
    """Exports the last finished imp level of every replicate (main.py's --export_final)."""
    return [export(experiment_dir, level="final", variant="imp", replicate=r, formats=formats) for r in range(replicates)]
