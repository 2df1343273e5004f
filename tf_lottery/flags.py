"""absl flags derived from the config fields, and their conversion to a config.

Only this module and main.py touch absl FLAGS. Importing it defines nothing:
`define_flags()` does, once.
"""

import dataclasses
import typing
from typing import Any, Dict, List

from absl import flags

from tf_lottery import config as config_lib


def _kind(field) -> str:
    """'bool', 'int', 'float', 'str' or 'list:<item type>' for a config field."""
    tp = field.type
    if typing.get_origin(tp) is typing.Union:  # Optional[X]
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is tuple:
        return "list:" + typing.get_args(tp)[0].__name__
    return tp.__name__


def _fields():
    for section, kind in config_lib.SECTIONS.items():
        for field in dataclasses.fields(kind):
            yield section, field


def define_flags(flag_values=flags.FLAGS, skip=()):
    """Defines one flag per config field, except those named in `skip` (idempotent)."""
    define_option_flags(config_lib.SECTIONS.values(), flag_values, skip)


def define_option_flags(kinds, flag_values=flags.FLAGS, skip=()):
    """Defines one flag per `option()` field of the dataclasses `kinds` (idempotent)."""
    for field in (f for kind in kinds for f in dataclasses.fields(kind)):
        if field.name in flag_values or field.name in skip:
            continue
        kind, help_text = _kind(field), field.metadata["help"]
        choices = field.metadata["choices"]
        if kind == "bool":
            flags.DEFINE_bool(field.name, field.default, help_text, flag_values=flag_values)
        elif kind == "int":
            flags.DEFINE_integer(field.name, field.default, help_text, flag_values=flag_values)
        elif kind == "float":
            flags.DEFINE_float(field.name, field.default, help_text, flag_values=flag_values)
        elif kind == "str" and choices:
            flags.DEFINE_enum(field.name, field.default, choices, help_text, flag_values=flag_values)
        elif kind == "str":
            flags.DEFINE_string(field.name, field.default, help_text, flag_values=flag_values)
        elif kind.startswith("list:"):
            default = [str(v) for v in field.default] or None
            flags.DEFINE_list(field.name, default, help_text, flag_values=flag_values)
        else:  # pragma: no cover - a new field type needs a flag type here
            raise TypeError(f"config field {field.name} has unsupported type {field.type}")


def _convert_list(name: str, item_type: str, values) -> tuple:
    convert = {"int": int, "float": float, "str": str}[item_type]
    items = [v.strip() for v in (values or []) if v.strip()]
    try:
        return tuple(convert(v) for v in items)
    except ValueError:
        raise config_lib.ConfigError(f"--{name}: expected a comma-separated list of {item_type}s, got {','.join(items)!r}") from None


def values_from_flags(flag_values=flags.FLAGS) -> Dict[str, Any]:
    """{field name: converted flag value} for every config field."""
    return option_values(config_lib.SECTIONS.values(), flag_values)


def option_values(kinds, flag_values=flags.FLAGS, only_present: bool = False, skip=()) -> Dict[str, Any]:
    """{field name: converted flag value} for the fields of `kinds` but `skip` (only those given, with `only_present`)."""
    values = {}
    for field in (f for kind in kinds for f in dataclasses.fields(kind)):
        if field.name in skip or field.name not in flag_values or (only_present and not flag_values[field.name].present):
            continue
        raw = flag_values[field.name].value
        kind = _kind(field)
        values[field.name] = _convert_list(field.name, kind[5:], raw) if kind.startswith("list:") else raw
    return values


def config_from_flags(flag_values=flags.FLAGS) -> config_lib.ExperimentConfig:
    """The validated experiment config the parsed flags describe."""
    return config_lib.ExperimentConfig.from_flat(values_from_flags(flag_values))


def _format(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flagfile_lines(config: config_lib.ExperimentConfig) -> List[str]:
    """A replayable flagfile of the effective config, one `--name=value` a line."""
    lines = []
    for section, field in _fields():
        value = getattr(getattr(config, section), field.name)
        if not field.metadata["recorded"]:
            continue
        if value is None or (isinstance(value, tuple) and not value):
            continue  # absent means default; absl cannot spell None or an empty list
        if field.name == "experiment_name" and not value:
            value = config.experiment_name
        lines.append(f"--{field.name}={_format(value)}")
    return lines
