"""Runs a branch over cells of its parent: trains its runs, measures them, rebuilds its table.

Like the IMP loop, every step checks for its output first: a cell whose rows.json
exists is done, a run whose result.json exists is read, an interrupted run resumes.
A second identical call trains nothing.
"""

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

ROWS_FILE = "rows.json"


def check_record(branch: Branch, cell: Cell, path: str):
    """Refuses a branch folder whose branch.json says other settings (a default changed, say)."""
    stored = files.read_json(path, recover="delete its branch folder to compute it again")
    current = branch.record(cell)
    differing = stored_differences([type(branch.options)], current["options"], stored.get("options", {}))
    if stored.get("overrides") != current["overrides"]:
        differing.append("overrides")
    if stored.get("parent", {}).get("fingerprint") != current["parent"]["fingerprint"]:
        differing.append("parent experiment")
    if differing:
        raise UsageError(f"{os.path.dirname(path)} holds branch {branch.name} with other settings "
                         f"(differs in {', '.join(differing)}); delete it to compute it again")


def run_cell(branch: Branch, cell: Cell, bench) -> bool:
    """Trains and measures one cell; False when another process holds one of its runs."""
    folder = branch.folder(cell)
    rows_path = os.path.join(folder.directory, ROWS_FILE)
    if os.path.exists(folder.spec):
        check_record(branch, cell, folder.spec)
    elif bench.is_chief:
        write_json(folder.spec, branch.record(cell))
    if os.path.exists(rows_path):
        return True
    finished = {}
    for spec in branch.runs(cell):
        result = run_lib.train(spec, bench, branch.hooks(spec), wait=False)
        if result is None and bench.is_chief:
            return False  # left to the process training it; it measures the cell
        finished[spec.name] = result
    rows = branch.measure(cell, finished, bench)
    if bench.is_chief:
        common = {"branch": branch.name, "branch_hash": branch.hash, "replicate": cell.replicate,
                  "level": cell.level, "variant": cell.variant, **vars_of(branch.options)}
        write_json(rows_path, [{**common, **row} for row in rows])
    bench.barrier()
    return True


def vars_of(options) -> dict:
    return {k: (",".join(map(str, v)) if isinstance(v, tuple) else v) for k, v in vars(options).items()}


def table_rows(paths: ExperimentPaths, name: str) -> List[dict]:
    """Every measured row of branch `name` in the experiment, over all its settings."""
    pattern = os.path.join(paths.root, "replicate_*", "level_*", f"{BRANCH_PREFIX}{name}_*", ROWS_FILE)
    rows = []
    for path in glob.glob(pattern):
        if os.path.basename(os.path.dirname(path))[len(BRANCH_PREFIX) + len(name) + 1:].isalnum():
            rows.extend(files.read_json(path, recover="delete it to measure that cell again"))
    rows.sort(key=lambda r: (r["branch_hash"], r["replicate"], r["level"], r["variant"], str(r.get("run", ""))))
    return rows


def run_branch(branch: Branch, cells: Sequence[Cell], bench) -> List[dict]:
    """Runs every cell, then rewrites branches/<name>.csv; returns the table's rows."""
    for cell in cells:
        run_cell(branch, cell, bench)
    rows = table_rows(branch.parent.paths, branch.name)
    if bench.is_chief:
        results.write_table(branch.parent.paths.branch_table(branch.name), branch.table_columns(), rows)
    return rows
