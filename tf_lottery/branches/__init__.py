"""Branches: analyses and new kinds of runs over a finished IMP experiment.

    python -m tf_lottery.branch --experiment_dir=DIR --branch=NAME [--levels=1,3-5] ...

`names()` lists the registered branches, `get(name)` returns one's class. Each
lives in a file of its own here and registers itself on import (see base.py).
"""

import dataclasses
from typing import List, Type

from tf_lottery import config as config_lib
from tf_lottery import registry

_BRANCHES = registry.Registry[type]("branch")
# The branch command's own flags: no branch option may take these names.
COMMAND_FLAGS = ("experiment_dir", "branch", "levels", "replicates", "variants", "dry_run", "progress", "traceback")


def register(cls):
    """Class decorator: makes a Branch subclass known under cls.name."""
    main_flags = {f.name for kind in config_lib.SECTIONS.values() for f in dataclasses.fields(kind)}
    for field in dataclasses.fields(cls.Options):
        if field.name in main_flags or field.name in COMMAND_FLAGS:
            raise ValueError(f"branch {cls.name}: option --{field.name} would shadow a flag of the same name")
        for other in (get(n) for n in names()):
            twin = {f.name: f for f in dataclasses.fields(other.Options)}.get(field.name)
            if twin is not None and twin.type != field.type:
                raise ValueError(f"branch {cls.name}: option --{field.name} has another type in branch {other.name}")
    _BRANCHES.register(cls.name, cls)
    return cls


def names() -> List[str]:
    return _BRANCHES.names()


def get(name: str) -> Type:
    return _BRANCHES.get(name)


# pylint: disable=wrong-import-position,unused-import
from tf_lottery.branches import (  # noqa: E402,F401
    combine, franken, gmp, pai, prune_during_training, random_prune, reinit, retrain_ticket, stability, supermask, transfer)
