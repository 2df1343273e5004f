"""combine: tickets combined — ensembles, sparse weight averages, mask unions and intersections.

Each --how is a part of a cell (replicate r, level L, variant v), one table row each:

  ensemble      (--members=2,3: a part per size n) the parent's finished runs of replicates
                r, r+1, ..., r+n-1 at (L, v), cyclic over the replicates that finished it.
                Nothing trains: each member's final weights are evaluated on the test set
                and their logits (not probabilities) averaged. Its budget is the members'
                summed density.
  average       (--copies=n >= 2) n copies of the cell's ticket trained from the parent's
                start of the cell (θ0, or θk and iteration k when it rewinds) with the data
                orders of the stability branch's copies, then every variable averaged (a
                "sparse soup"; BatchNorm moving statistics are averaged like the weights,
                not recomputed). The copies share the mask, so the average keeps it exactly
                (checked). Where the stability branch with the same overrides already
                trained copy 0 and 1 of the same run (its data pair at k = the cell's start
                iteration, same mask, start and settings: checked from their run.json and
                mask.npz), those folders are read, not trained again; the others train here
                (<variant>_average_copy<c>, shared by every --copies). The soup is kept as
                average_<variant>_c<n>.npz; the copies' ensemble is measured beside it.
  union,        the cell's mask OR / AND the --partner experiment's at the same (r, L, v),
  intersection  retrained once from the parent's start of the cell with the parent's data
                seed of the cell. Level 0 has no mask to combine: these skip it.

Every row compares the combination with the single ticket of the same budget: the parent's
imp run of replicate r at the level whose density is nearest (in log density) to the row's
budget_density (the summed density of an ensemble, the density otherwise), and records the
dense network's (level 0) accuracy. iterations_spent is the training that produced the
combination: an ensemble's members' masks and runs, an average's mask and copies, a union's
two masks and its retraining.

The partner shares θ0 with the parent: every hashed setting but --data_seed must be equal
(its config.json) and θ0 of each replicate equal bit for bit. Its path stays out of the hash
(every option here chooses parts, so more parts add to one folder, like stability's): its
runs are named by the partner's experiment hash, so a partner moved on disk keeps them and a
partner of other settings gets its own. Too few replicates for an ensemble, a missing or
mismatched partner, or a partner lacking the cell are one-line usage errors.
"""

import dataclasses
import functools
import math
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from tf_lottery import branches
from tf_lottery import config as config_lib
from tf_lottery.branches.base import Branch, Cell
from tf_lottery.branches.stability import Stability
from tf_lottery.config import ConfigError, option
from tf_lottery.data import pipeline
from tf_lottery.errors import RunError, UsageError
from tf_lottery.experiment import files, paths
from tf_lottery.experiment.reader import Experiment
from tf_lottery.pruning import masks as masks_lib
from tf_lottery.training import combination, interpolation
from tf_lottery.training.run import RunSpec
from tf_lottery.utils import spans

DESCRIPTION = ("tickets combined: ensembles of replicates, weight averages of copies from one start, mask unions and "
               "intersections retrained; each against the single ticket of the same budget")
HOWS = ("ensemble", "average", "union", "intersection")
MASK_OPERATIONS = {"union": np.logical_or, "intersection": np.logical_and}
COLUMNS = ("run", "how", "size", "density", "budget_density", "test_accuracy", "test_loss", "member_accuracy_mean",
           "member_accuracy_min", "member_accuracy_max", "member_accuracies", "ensemble_test_accuracy", "overlap",
           "nearest_level", "nearest_density", "nearest_test_accuracy", "dense_test_accuracy", "partner",
           "partner_hash", "runs", "iterations_spent")


@dataclasses.dataclass(frozen=True)
class CombineOptions:
    how: Tuple[str, ...] = option(("ensemble", "average"), "What to combine, a part each: ensemble (the logits of "
                                  "--members tickets of consecutive replicates averaged), average (the weights of "
                                  "--copies copies from the cell's start averaged), union / intersection (the cell's "
                                  "mask OR / AND the --partner's, retrained from the cell's start).")
    members: Tuple[int, ...] = option((2,), "Ensemble sizes, a part each: replicate r's ticket with those of "
                                      "r+1, ... (cyclic over the replicates that finished the level).")
    copies: int = option(2, "Copies a weight average takes (>= 2); the stability branch's two copies of the same "
                         "run are reused where it trained them.")
    partner: str = option("", "union and intersection: a finished experiment sharing the parent's θ0 (its flags with "
                          "another --data_seed); its runs here are named by its experiment hash, not its path.")

    def validate(self):
        unknown = [h for h in self.how if h not in HOWS]
        if unknown or not self.how:
            raise ConfigError(f"--how: expected some of {','.join(HOWS)}, got {','.join(self.how) or 'nothing'}")
        if len(set(self.how)) != len(self.how):
            raise ConfigError("--how: lists a part twice")
        if not self.members or any(n < 2 for n in self.members):
            raise ConfigError(f"--members: ensemble sizes must be >= 2, got {','.join(map(str, self.members))}")
        if len(set(self.members)) != len(self.members):
            raise ConfigError("--members: lists a size twice")
        if self.copies < 2:
            raise ConfigError(f"--copies: must be >= 2, got {self.copies}")
        if set(self.how) & set(MASK_OPERATIONS) and not self.partner:
            raise ConfigError("--partner: union and intersection need a partner experiment (the parent's flags "
                              "with another --data_seed)")


@dataclasses.dataclass(frozen=True)
class Part:
    """One part of a cell: how it combines and how many networks."""

    how: str
    size: int


@branches.register
class Combine(Branch):
    name = "combine"
    description = DESCRIPTION
    Options = CombineOptions
    columns = COLUMNS
    part_options = ("how", "members", "copies", "partner")

    def __init__(self, parent, options=None, overrides=None):
        if options is not None and options.partner:  # the table records where it was
            options = dataclasses.replace(options, partner=os.path.abspath(options.partner))
        super().__init__(parent, options, overrides)
        self._theta_checked = set()  # replicates whose θ0 the partner shares
        self.partner = self._open_partner() if set(self.options.how) & set(MASK_OPERATIONS) else None
        if "ensemble" in self.options.how:
            replicates = sorted({int(r["replicate"]) for r in parent.rows()})
            if len(replicates) < max(self.options.members):
                raise UsageError(f"--members: an ensemble of {max(self.options.members)} needs as many replicates; "
                                 f"{parent.paths.root} has {len(replicates)} ({spans(replicates) or 'none'})")
        self._evaluators: Dict[int, combination.Evaluator] = {}
        self._logits: Dict = {}  # one cell's members' logits, shared by its ensembles

    @functools.cached_property
    def stability(self) -> Stability:
        """The stability branch with these overrides: where its copies would be, and their data orders."""
        return Stability(self.parent, None, self.overrides)

    # The partner --------------------------------------------------------------

    def _open_partner(self) -> Experiment:
        where = self.options.partner
        try:
            partner = Experiment.open(where)
        except UsageError as error:
            raise UsageError(str(error).replace("--experiment_dir:", "--partner:", 1)) from None
        mine, theirs = self.parent.config.flat(), partner.config.flat()
        differing = [k for k in sorted(config_lib.HASHED)
                     if k != "data_seed" and config_lib.canonical(mine[k]) != config_lib.canonical(theirs[k])]
        if differing:
            raise UsageError(f"--partner: {where} differs from the parent in {', '.join('--' + k for k in differing)}; "
                             "a partner shares every setting but --data_seed")
        for replicate in sorted({int(r["replicate"]) for r in self.parent.rows()}):
            if os.path.exists(partner.paths.theta_init(replicate)):
                self._check_theta(partner, replicate)
        return partner

    def _check_theta(self, partner: Experiment, replicate: int):
        if replicate in self._theta_checked:
            return
        mine, theirs = self.parent.theta_init(replicate), partner.theta_init(replicate)
        same = len(mine) == len(theirs) and all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(mine, theirs))
        if not same:
            raise UsageError(f"--partner: θ0 of replicate {replicate} in {partner.paths.root} is not the parent's; "
                             "a partner starts from the same weights (the same flags but --data_seed)")
        self._theta_checked.add(replicate)

    @property
    def partner_hash(self) -> str:
        return self.partner.config.experiment_hash()

    def _require_partner(self, cell: Cell):
        r, level, variant = cell.replicate, cell.level, cell.variant
        if not self.partner.finished(r, level, variant):
            levels = self.partner.finished_levels(r, variant)
            raise UsageError(f"--partner: replicate {r} level {level} {variant} of {self.partner.paths.root} has not "
                             f"finished (finished {variant} levels of replicate {r}: {spans(levels) or 'none'})")
        self._check_theta(self.partner, r)

    # Parts and runs -----------------------------------------------------------

    def parts(self, cell: Cell) -> List[Cell]:
        chosen = []
        for how in self.options.how:
            if how == "ensemble":
                chosen += [Part(how, n) for n in self.options.members]
            elif how == "average":
                chosen.append(Part(how, self.options.copies))
            elif cell.level > 0:
                chosen.append(Part(how, 2))
        return [dataclasses.replace(cell, part=part) for part in chosen]

    def check(self, cells: List[Cell]):
        for cell in cells:
            for part in self.parts(cell):
                if part.part.how == "ensemble":
                    self.members(cell, part.part.size)
                elif part.part.how in MASK_OPERATIONS:
                    self._require_partner(cell)

    def key(self, cell: Cell) -> str:
        how, size = cell.part.how, cell.part.size
        if how == "ensemble":
            return f"{cell.variant}_ensemble_n{size}"
        if how == "average":
            return f"{cell.variant}_average_c{size}"
        return f"{cell.variant}_{how}_{self.partner_hash}"

    def members(self, cell: Cell, size: int) -> List[int]:
        """The replicates of an ensemble of `size` for `cell`: r and the next ones that finished the level."""
        finished = sorted({int(r["replicate"]) for r in self.parent.rows()
                           if int(r["level"]) == cell.level and r["variant"] == cell.variant})
        if len(finished) < size:
            raise UsageError(f"--members: an ensemble of {size} at level {cell.level} needs {size} replicates that "
                             f"finished it; {cell.variant} level {cell.level} finished in replicates "
                             f"{spans(finished) or 'none'}")
        start = finished.index(cell.replicate)
        return [finished[(start + i) % len(finished)] for i in range(size)]

    def runs(self, cell: Cell) -> List[RunSpec]:
        if cell.part.how == "ensemble":
            return []
        if cell.part.how == "average":
            return self.copies(cell)
        init, start = self.parent_start(cell)
        return [self.spec(cell, self.key(cell), self.combined_masks(cell), init, start,
                          data_seed=self.parent.data_seed_of(cell.replicate, cell.level, cell.variant))]

    def copies(self, cell: Cell) -> List[RunSpec]:
        """The average's copies: this branch's where it trained them, else the stability branch's finished
        copies of the same run, else this branch's to train."""
        init, start = self.parent_start(cell)
        masks = self.parent.masks(cell.replicate, cell.level, cell.variant)
        specs = []
        for copy in range(cell.part.size):
            spec = self.spec(cell, f"{cell.variant}_average_copy{copy}", masks, init, start,
                             data_seed=self.stability.copy_data_seed(cell, copy))
            if copy < 2 and not os.path.exists(spec.paths.result):
                part = paths.stability_part(cell.variant, "data", start)
                theirs = self.stability.folder(cell).run(f"{part}_copy{copy}")
                if self._same_run(theirs.directory, spec):
                    spec = dataclasses.replace(spec, directory=theirs.directory)
            specs.append(spec)
        return specs

    def _same_run(self, directory: str, spec: RunSpec) -> bool:
        """Whether the finished run in `directory` is `spec` under another name (start, data order, settings, mask)."""
        found = paths.RunPaths(directory)
        if not all(os.path.exists(p) for p in (found.result, found.spec, found.mask)):
            return False
        stored, mine = files.read_json(found.spec), spec.record(self.parent.paths.root)

        def start(record):  # the weights it starts from (the label aside: theta_rewind is theta_at_<k>), where, how
            init = record.get("init", {})
            return init.get("file"), init.get("seed"), record.get("start_iteration"), record.get("data_seed")

        if start(stored) != start(mine) or config_lib.stored_differences(
                config_lib.SECTIONS.values(), spec.config.flat(), stored.get("config", {})):
            return False
        return combination.same_masks(files.read_masks(found.mask), spec.masks)

    def combined_masks(self, cell: Cell) -> files.Masks:
        """The cell's mask OR / AND the partner's, weight by weight."""
        mine = self.parent.masks(cell.replicate, cell.level, cell.variant)
        theirs = self.partner.masks(cell.replicate, cell.level, cell.variant)
        operation = MASK_OPERATIONS[cell.part.how]
        return {path: operation(m > 0, theirs[path] > 0).astype(np.float32) for path, m in mine.items()}

    def soup_file(self, cell: Cell) -> str:
        return os.path.join(self.folder(cell).directory, f"average_{cell.variant}_c{cell.part.size}.npz")

    # Measuring ----------------------------------------------------------------

    def evaluator(self, bench) -> combination.Evaluator:
        """The test set on the branch's model (built once per workbench's model)."""
        model = bench.trainer(self.config).model
        if id(model) not in self._evaluators:
            splits = bench.splits(self.config)
            test = pipeline.evaluation_dataset(splits.test_images, splits.test_labels, splits.info,
                                               self.config.data.eval_batch_size)
            self._evaluators[id(model)] = combination.Evaluator(model, test)
        return self._evaluators[id(model)]

    def member_logits(self, cell: Cell, replicate: int, bench) -> np.ndarray:
        """The test logits of the parent's run of `replicate` at the cell's level and variant
        (kept while one cell's ensembles are measured)."""
        if self._logits.get("cell") != (cell.replicate, cell.level, cell.variant):
            self._logits = {"cell": (cell.replicate, cell.level, cell.variant)}
        run = (replicate, cell.level, cell.variant)
        if run not in self._logits:
            self._logits[run] = self.evaluator(bench).logits(self.parent.final_weights(*run), self.parent.masks(*run),
                                                             source=f"replicate {replicate}'s final weights")
        return self._logits[run]

    def measure(self, cell: Cell, finished: Dict[str, dict], bench) -> List[dict]:
        how = cell.part.how
        if how == "ensemble":
            row = self._ensemble(cell, bench)
        elif how == "average":
            row = self._average(cell, finished, bench)
        else:
            row = self._mask_combination(cell, finished)
        row = {"run": self.key(cell), "how": how, "size": cell.part.size, **row}
        return [{**row, **self.comparison(cell, row["budget_density"])}]

    def _ensemble(self, cell: Cell, bench) -> dict:
        members = self.members(cell, cell.part.size)
        labels = self.evaluator(bench).labels
        logits = [self.member_logits(cell, m, bench) for m in members]
        ensemble = combination.ensemble_logits(logits)
        densities = [self.parent.result(m, cell.level, cell.variant)["density"] for m in members]
        return {"density": densities[0], "budget_density": float(sum(densities)),
                "test_accuracy": combination.accuracy(ensemble, labels),
                "test_loss": combination.cross_entropy(ensemble, labels),
                **spread([combination.accuracy(l, labels) for l in logits]),
                "ensemble_test_accuracy": combination.accuracy(ensemble, labels),
                "runs": self._relative(self.parent.run(m, cell.level, cell.variant).directory for m in members),
                "iterations_spent": sum(self.parent.iterations_spent(m, cell.level, cell.variant) for m in members)}

    def _average(self, cell: Cell, finished: Dict[str, dict], bench) -> dict:
        specs = self.copies(cell)
        masks = self.parent.masks(cell.replicate, cell.level, cell.variant)
        weights = []
        for spec in specs:
            recover = f"delete {spec.directory} to train that copy again"
            if not combination.same_masks(files.read_masks(spec.paths.mask, recover), masks):
                raise RunError(f"{spec.paths.mask} is not the mask of replicate {cell.replicate} level {cell.level} "
                               f"{cell.variant}; {recover}")
            weights.append(files.read_weights(spec.paths.final_weights, recover))
        soup = combination.average(weights)
        evaluator = self.evaluator(bench)
        combination.check_masked(soup, interpolation.prunable_positions(evaluator.model), masks, "the weight average")
        if bench.is_chief:
            files.write_weights(self.soup_file(cell), files.read_weight_names(specs[0].paths.final_weights), soup)
        labels = evaluator.labels
        logits = [evaluator.logits(w, masks, source=spec.paths.final_weights) for w, spec in zip(weights, specs)]
        averaged = evaluator.logits(soup, masks, source="the weight average")
        density = masks_lib.density(masks)
        return {"density": density, "budget_density": density, "test_accuracy": combination.accuracy(averaged, labels),
                "test_loss": combination.cross_entropy(averaged, labels),
                **spread([combination.accuracy(l, labels) for l in logits]),
                "ensemble_test_accuracy": combination.accuracy(combination.ensemble_logits(logits), labels),
                "runs": self._relative(spec.directory for spec in specs),
                "iterations_spent": self.iterations_spent(cell, *(finished[spec.name] for spec in specs))}

    def _mask_combination(self, cell: Cell, finished: Dict[str, dict]) -> dict:
        [spec] = self.runs(cell)
        result = finished[spec.name]
        r, level, variant = cell.replicate, cell.level, cell.variant
        sources = [self.parent.result(r, level, variant), self.partner.result(r, level, variant)]
        return {"density": result["density"], "budget_density": result["density"],
                "test_accuracy": result["final_test_accuracy"], "test_loss": result.get("final_test_loss"),
                **spread([s["final_test_accuracy"] for s in sources]),
                "overlap": combination.overlap(*(e.masks(r, level, variant) for e in (self.parent, self.partner))),
                "partner": self.partner.paths.root, "partner_hash": self.partner_hash,
                "runs": self._relative([spec.directory]),
                # both masks and the retraining
                "iterations_spent": self.iterations_spent(cell, result) + self.partner.mask_iterations(r, level, "imp")}

    def comparison(self, cell: Cell, budget: float) -> dict:
        """The parent's imp ticket of the cell's replicate nearest the budget (in log density), and its dense network."""
        rows = [row for row in self.parent.rows() if int(row["replicate"]) == cell.replicate and row["variant"] == "imp"]
        nearest = min(rows, key=lambda row: (abs(math.log(row["density"] / budget)), int(row["level"])))
        dense = self.parent.result(cell.replicate, 0, "imp")
        return {"nearest_level": int(nearest["level"]), "nearest_density": nearest["density"],
                "nearest_test_accuracy": nearest["final_test_accuracy"],
                "dense_test_accuracy": dense["final_test_accuracy"] if dense else None}

    def _relative(self, directories) -> str:
        return ";".join(os.path.relpath(d, self.parent.paths.root) for d in directories)


def spread(accuracies: Sequence[float]) -> dict:
    """The members' accuracies: mean, min, max and the list ('a,b,c')."""
    return {"member_accuracy_mean": float(np.mean(accuracies)), "member_accuracy_min": float(min(accuracies)),
            "member_accuracy_max": float(max(accuracies)),
            "member_accuracies": ",".join(f"{a:.6g}" for a in accuracies)}
