"""Typed, validated configuration from plain mappings (params.yaml sections).

Each component owns a frozen dataclass of its parameters; `from_mapping` turns a YAML
section into it, rejecting unknown keys and wrong types with an error that names the key.
Range checks live in each dataclass's `__post_init__` via `check`. A dataclass that renamed a
key says so in its `RENAMED` class attribute (old -> new): the old name still reads, with one
warning line, so params files, presets and study files written before the rename keep working.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from cfdg.errors import ConfigError, warn

T = TypeVar("T")


def check(condition: bool, where: str, message: str) -> None:
    """Raise ConfigError('<where>: <message>') unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{where}: {message}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: must have {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        return origin(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, got {value!r}")
        return value
    return value


_WARNED: set[tuple[str, str, str]] = set()


def renamed_keys(
    cls: type, mapping: Mapping[str, Any], place: str, section: str, quiet: bool = False
) -> dict[str, Any]:
    """`mapping` (a section of `cls`) with each old key name of `cls.RENAMED` under its new name.

    One warning line per old name and place, however often the place is read (a study validates
    every cell); none when `quiet` (a committed record written before the rename is history, not
    a mistake). Both names given is a ConfigError: which one was meant cannot be guessed.
    """
    out = dict(mapping)
    at = f"{place}: " if place else ""
    for old, new in getattr(cls, "RENAMED", {}).items():
        if old not in out:
            continue
        if new in out:
            both = f"{section}.{old} and {section}.{new} are both given"
            raise ConfigError(f"{at}{both}; {old} is the old name of {new}: keep only {new}")
        out = {(new if k == old else k): v for k, v in out.items()}  # same place, so files keep their order
        if not quiet and (place, section, old) not in _WARNED:
            _WARNED.add((place, section, old))
            warn(f"{at}{section}.{old} is now {section}.{new}")
    return out


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from `mapping`; missing keys keep their defaults, old key names
    (`cls.RENAMED`) read as their new ones. `where` is `section` or `file:section`."""
    where = where or cls.__name__
    mapping = {} if mapping is None else mapping
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: must be a mapping, got {mapping!r}")
    place, _, section = where.rpartition(":")
    mapping = renamed_keys(cls, mapping, place, section)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in mapping.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain JSON-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(obj).items()}
