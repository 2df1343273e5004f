"""Where an experiment's files live.

<output_dir>/<experiment_name>/
  flags.cfg  config.json  dataset.json  results.csv
  replicate_<r>/theta_0.npz  theta_rewind.npz
  replicate_<r>/level_<LL>/<variant>/
      mask.npz  final_weights.npz  metrics.csv  result.json  checkpoints/  events.out.tfevents.*
"""

import dataclasses
import glob
import os


@dataclasses.dataclass(frozen=True)
class RunPaths:
    directory: str

    @property
    def mask(self):
        return os.path.join(self.directory, "mask.npz")

    @property
    def final_weights(self):
        return os.path.join(self.directory, "final_weights.npz")

    @property
    def metrics(self):
        return os.path.join(self.directory, "metrics.csv")

    @property
    def result(self):
        return os.path.join(self.directory, "result.json")

    @property
    def checkpoints(self):
        return os.path.join(self.directory, "checkpoints")


@dataclasses.dataclass(frozen=True)
class ExperimentPaths:
    root: str

    @classmethod
    def of(cls, output_dir: str, experiment_name: str) -> "ExperimentPaths":
        return cls(os.path.join(output_dir, experiment_name))

    @property
    def flags(self):
        return os.path.join(self.root, "flags.cfg")

    @property
    def config(self):
        return os.path.join(self.root, "config.json")

    @property
    def dataset(self):
        return os.path.join(self.root, "dataset.json")

    @property
    def results(self):
        return os.path.join(self.root, "results.csv")

    def replicate(self, replicate: int) -> str:
        return os.path.join(self.root, f"replicate_{replicate}")

    def theta_init(self, replicate: int) -> str:
        return os.path.join(self.replicate(replicate), "theta_0.npz")

    def theta_rewind(self, replicate: int) -> str:
        return os.path.join(self.replicate(replicate), "theta_rewind.npz")

    def run(self, replicate: int, level: int, variant: str) -> RunPaths:
        return RunPaths(os.path.join(self.replicate(replicate), f"level_{level:02d}", variant))

    def result_files(self):
        return sorted(glob.glob(os.path.join(self.root, "replicate_*", "level_*", "*", "result.json")))
