"""YAML configuration files validated into frozen dataclasses.

:func:`from_mapping` walks a dataclass's type hints and converts a plain mapping into it, raising a
:class:`~boltzclf.core.errors.ConfigError` that names the file and the dotted key for unknown keys,
missing keys and wrongly typed values. Value checks live in each dataclass's ``__post_init__`` and use
:func:`require`, which raises the same error type.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from boltzclf.core.errors import ConfigError

T = TypeVar("T")

#: Integers in configs go to torch and numpy, which hold them in 64 bits.
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def load_yaml(path: str | Path) -> dict:
    """Read a YAML file whose top level is a mapping.

    Raises
    ------
    ConfigError
        If the file is missing or unreadable, is not UTF-8 text, is not valid YAML, or its top level
        is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}); expected YAML") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = getattr(exc, "position", None)  # a ReaderError (forbidden character) has no mark
        where = (f" (line {mark.line + 1}, column {mark.column + 1})" if mark
                 else f" (character {position + 1})" if isinstance(position, int) else "")
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        problem = " ".join(str(problem).split())  # one line
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's int-string conversion limit
        raise ConfigError(f"{path}: malformed YAML: {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


class InvalidValue(ConfigError):
    """A value check failed; ``key`` is relative to the dataclass doing the check."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


#: Field metadata key of a setting added after runs were made with the code before it, whose default
#: does exactly what that code did: a run directory written without the setting resumes
#: (:func:`boltzclf.core.rundir.with_defaults`). Settings without it must match to resume.
KEEPS_EARLIER_BEHAVIOUR = "keeps_earlier_behaviour"


def added_setting(default: Any) -> Any:
    """The dataclass field of a setting added later whose ``default`` reproduces what the code did before
    the setting existed (see :data:`KEEPS_EARLIER_BEHAVIOUR`)."""
    return dataclasses.field(default=default, metadata={KEEPS_EARLIER_BEHAVIOUR: True})


def require(condition: bool, key: str, message: str) -> None:
    """Raise :class:`InvalidValue` for ``key`` (relative to the checking dataclass) unless ``condition``.

    :func:`from_mapping` turns it into ``"<file>: <full.key>: <message>"``.
    """
    if not condition:
        raise InvalidValue(key, message)


def from_mapping(cls: type[T], data: Any, where: str, key: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, validating keys, types and values.

    Parameters
    ----------
    cls
        A dataclass type. Nested dataclasses, ``Literal``, ``Optional``, ``tuple[X, ...]`` and
        ``dict[str, X]`` fields are converted recursively.
    data
        The mapping read from YAML (or JSON).
    where
        The source named in error messages (usually the file path). Messages read
        ``"<where>: <dotted.key>: <problem>"``.
    key
        Dotted key of ``data`` inside that source, when it is a sub-mapping (e.g. ``"source"``).
    """
    return _build(cls, data, _Location(where, key))


class _Location:
    """A source (file) and a dotted key path inside it, for error messages."""

    def __init__(self, source: str, key: str):
        self.source, self.key = source, key

    def child(self, name: str) -> "_Location":
        return _Location(self.source, f"{self.key}.{name}" if self.key else name)

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key}: {message}" if self.key else f"{self.source}: {message}")


def _build(cls, data: Any, loc: _Location):
    if not isinstance(data, dict):
        raise loc.error(f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)  # YAML keys may be numbers, booleans or null
    if unknown:
        raise loc.error(f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], loc.child(name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise loc.error(f"missing required key {name!r}")
    try:
        return cls(**kwargs)
    except InvalidValue as exc:  # a value check in __post_init__, keyed relative to this mapping
        raise loc.child(exc.key).error(exc.message) from None


def to_dict(obj: Any) -> Any:
    """A dataclass (possibly nested) as plain JSON-ready containers; tuples become lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _convert(tp: Any, value: Any, loc: _Location) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, loc)
    if origin is Literal:
        if value not in args:
            raise loc.error(f"{value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, loc)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0]) if len(errors) == 1 else loc.error(f"{value!r} matches none of {args}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise loc.error(f"expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, loc.child(str(i))) for i, v in enumerate(value))
        if len(value) != len(args):
            raise loc.error(f"expected a list of {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, loc.child(str(i))) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise loc.error(f"expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(args[1], v, loc.child(str(k))) for k, v in value.items()}
    return _convert_scalar(tp, value, loc)


def _convert_scalar(tp: Any, value: Any, loc: _Location) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not INT64_MIN <= value <= INT64_MAX:
            raise loc.error(f"{_short(value)} is out of range (a 64-bit integer)")
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            try:
                value = float(value)
            except OverflowError:  # an integer beyond the float range
                raise loc.error(f"{_short(value)} is out of range for a number") from None
            if not math.isfinite(value):
                raise loc.error(f"must be a finite number, got {value}")
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"config type {tp!r} at {loc.key} is not supported")
    if not ok:
        raise loc.error(f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _short(value: int) -> str:
    """A huge integer for a message: itself, or its sign and number of digits."""
    digits = len(str(abs(value))) if value.bit_length() < 10_000 else None
    if digits is not None and digits <= 30:
        return str(value)
    return f"{'-' if value < 0 else ''}an integer of {digits or 'over 3000'} digits"


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
        known = ", ".join(sorted(map(str, presets))) or "none"
        raise ConfigError(f"{where}: unknown preset {preset!r} (defined: {known})")
    if not isinstance(presets[preset], dict):
        raise ConfigError(f"{where}: presets.{preset}: expected a mapping of overrides, "
                          f"got {type(presets[preset]).__name__}")
    return deep_merge(data, presets[preset])
