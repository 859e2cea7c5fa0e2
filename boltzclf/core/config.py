"""YAML configuration files validated into frozen dataclasses.

:func:`from_mapping` walks a dataclass's type hints and converts a plain mapping into it, raising a
:class:`~boltzclf.core.errors.ConfigError` that names the file and the dotted key for unknown keys,
missing keys and wrongly typed values. Value checks live in each dataclass's ``__post_init__`` and use
:func:`require`, which raises the same error type.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from boltzclf.core.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict:
    """Read a YAML file whose top level is a mapping.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid YAML, or its top level is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def require(condition: bool, where: str, message: str) -> None:
    """Raise ``ConfigError(f"{where}: {message}")`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{where}: {message}")


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``data``, validating keys and types.

    Parameters
    ----------
    cls
        A dataclass type. Nested dataclasses, ``Literal``, ``Optional``, ``tuple[X, ...]`` and
        ``dict[str, X]`` fields are converted recursively.
    data
        The mapping read from YAML (or JSON).
    where
        Human-readable location used in error messages, e.g. ``"run.yaml: training"``.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r}")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """A dataclass (possibly nested) as plain JSON-ready containers; tuples become lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {args}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return _convert_scalar(tp, value, where)


def _convert_scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"config type {tp!r} at {where} is not supported")
    if not ok:
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of ``base`` with ``override``'s keys merged in recursively (mappings merge, others replace)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_preset(data: dict, preset: str | None, where: str) -> dict:
    """Remove the ``presets`` mapping from ``data`` and merge the named preset into it.

    Raises
    ------
    ConfigError
        If ``preset`` is given but not defined.
    """
    data = dict(data)
    presets = data.pop("presets", {}) or {}
    if not isinstance(presets, dict):
        raise ConfigError(f"{where}: 'presets' must be a mapping of names to overrides")
    if preset is None:
        return data
    if preset not in presets:
        known = ", ".join(sorted(presets)) or "none"
        raise ConfigError(f"{where}: unknown preset {preset!r} (defined: {known})")
    return deep_merge(data, presets[preset])
