"""Runs a branch over cells of its parent: trains its runs, measures them, rebuilds its table.

Like the IMP loop, every step checks for its output first: a cell (or part of one)
whose rows_<key>.json exists is done, a run whose result.json exists is read, an
interrupted run resumes. A second identical call trains nothing; one that changes
only options outside the hash measures the finished runs again.
"""

import dataclasses
import glob
import os
from typing import List, Sequence

from tf_lottery.branches.base import Branch, Cell
from tf_lottery.config import stored_differences
from tf_lottery.errors import UsageError
from tf_lottery.experiment import files, results
from tf_lottery.experiment.paths import BRANCH_PREFIX, ExperimentPaths
from tf_lottery.training import run as run_lib
from tf_lottery.utils import write_json

ROWS_PREFIX = "rows_"


def rows_path(branch: Branch, cell: Cell) -> str:
    """Where the measured rows of a cell (or part) are kept, in its branch folder."""
    return os.path.join(branch.folder(cell).directory, f"{ROWS_PREFIX}{branch.key(cell)}.json")


def _measured_alike(branch: Branch, rows: List[dict]) -> bool:
    """Whether stored rows were measured with the current values of the options outside the hash."""
    current = vars_of_values(branch.measured_options())
    unhashed = [f.name for f in dataclasses.fields(branch.options)
                if not f.metadata.get("hashed", True) and f.name in current]
    return all(row.get(name) == current[name] for row in rows for name in unhashed)


def check_record(branch: Branch, cell: Cell, path: str):
    """Refuses a branch folder whose branch.json says other settings (a default changed, say)."""
    stored = files.read_json(path, recover="delete its branch folder to compute it again")
    current = branch.record(cell)
    differing = [name for name in stored_differences([type(branch.options)], current["options"], stored.get("options", {}))
                 if name not in branch.part_options]  # parts add to a folder
    if stored.get("overrides") != current["overrides"]:
        differing.append("overrides")
    if not _same_parent(stored.get("parent", {}), current["parent"]):
        differing.append("parent experiment")
    if differing:
        raise UsageError(f"{os.path.dirname(path)} holds branch {branch.name} with other settings "
                         f"(differs in {', '.join(differing)}); delete it to compute it again")


def _same_parent(stored: dict, current: dict) -> bool:
    """Whether a branch folder was computed from the parent as it is now.

    The parent's experiment_hash digests its non-default settings (read from its own
    config.json), so it stays the same when tf_lottery adds a setting at a default
    that reproduces what runs did before, and changes when a setting or a default
    that the parent relied on does. The fingerprint, which digests every setting,
    decides only for records that lack the hash.
    """
    if "experiment_hash" in stored:
        return stored["experiment_hash"] == current["experiment_hash"]
    return stored.get("fingerprint") == current["fingerprint"]


def run_cell(branch: Branch, cell: Cell, bench) -> bool:
    """Trains and measures one cell (or part); False when another process holds one of its runs."""
    folder = branch.folder(cell)
    path = rows_path(branch, cell)
    if os.path.exists(folder.spec):
        check_record(branch, cell, folder.spec)
    elif bench.is_chief:
        write_json(folder.spec, branch.record(cell))
    if os.path.exists(path) and _measured_alike(branch, files.read_json(path, recover="delete it to measure that cell again")):
        return True
    branch.prepare(cell, bench)
    finished = {}
    specs = branch.runs(cell)
    width = bench.parallel_width(specs[0].config) if branch.independent_runs and len(specs) > 1 else 1
    results = []
    for start in range(0, len(specs), width):  # side by side, `width` at a time (train_group of one: train)
        chunk = specs[start:start + width]
        results += run_lib.train_group(chunk, bench, [branch.hooks(spec) for spec in chunk], wait=False)
        if None in results and bench.is_chief:
            break
    for spec, result in zip(specs, results):
        if result is None and bench.is_chief:
            return False  # left to the process training it; it measures the cell
        finished[spec.name] = result
    rows = branch.measure(cell, finished, bench)
    if bench.is_chief:
        common = {"branch": branch.name, "branch_hash": branch.hash, "replicate": cell.replicate,
                  "level": cell.level, "variant": cell.variant, **vars_of_values(branch.measured_options())}
        write_json(path, [{**common, **row} for row in rows])
    bench.barrier()
    return True


def vars_of_values(values: dict) -> dict:
    """Option values as a table holds them (tuples as 'a,b')."""
    return {k: (",".join(map(str, v)) if isinstance(v, tuple) else v) for k, v in values.items()}


def table_rows(paths: ExperimentPaths, name: str) -> List[dict]:
    """Every measured row of branch `name` in the experiment, over all its settings."""
    pattern = os.path.join(paths.root, "replicate_*", "level_*", f"{BRANCH_PREFIX}{name}_*", f"{ROWS_PREFIX}*.json")
    rows = []
    for path in glob.glob(pattern):
        if os.path.basename(os.path.dirname(path))[len(BRANCH_PREFIX) + len(name) + 1:].isalnum():
            rows.extend(files.read_json(path, recover="delete it to measure that cell again"))
    rows.sort(key=lambda r: (r["branch_hash"], r["replicate"], r["level"], r["variant"],
                             *(_sortable(r.get(k)) for k in SORT_KEYS)))
    return rows


SORT_KEYS = ("run", "pair", "rewind_iteration")


def _sortable(value):
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value or ""))


def write_table(branch: Branch, bench) -> List[dict]:
    """Rewrites branches/<name>.csv from every measured row; returns them."""
    rows = table_rows(branch.parent.paths, branch.name)
    if bench.is_chief:
        results.write_table(branch.parent.paths.branch_table(branch.name), branch.table_columns(), rows)
    return rows


def run_branch(branch: Branch, cells: Sequence[Cell], bench) -> List[dict]:
    """Runs every part of every cell, rewriting branches/<name>.csv after each one measured (so a
    long branch can be watched, and reported on, as it goes); returns the table's rows."""
    for cell in cells:
        for part in branch.parts(cell):
            if run_cell(branch, part, bench) and os.path.exists(rows_path(branch, part)):
                write_table(branch, bench)
    return write_table(branch, bench)
