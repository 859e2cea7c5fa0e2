"""Output directories of runs: resolved config, provenance, and the resume/overwrite rule.

A run directory holds ``config.json`` (the fully resolved config) and ``metadata.json``
(provenance, with the sha256 of every input file). Running the same command again resumes, after
checking that no input file has changed; running a *different* config into a directory that already
holds a run is refused, naming the settings that differ, so no existing output is overwritten. A
directory holding nothing but those two files (a start that failed before any work) is taken over
by the new config.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import types
import typing
from pathlib import Path
from typing import Union

from boltzclf.core import atomic, provenance
from boltzclf.core.config import KEEPS_EARLIER_BEHAVIOUR, from_mapping, to_dict
from boltzclf.core.errors import BoltzclfError

log = logging.getLogger(__name__)

RECORDS = ("config.json", "metadata.json")

#: The dataclass a resolved config was made from (``to_dict`` of it), or, for a config assembled from
#: parts, a mapping from its keys to their dataclasses (keys not named are compared as stored).
Schema = Union[type, dict[str, type], None]


def prepare(out: str | Path, resolved_config: dict, *, seed: int | None, device: str,
            inputs: tuple = (), schema: Schema = None) -> Path:
    """Create or reopen run directory ``out`` for ``resolved_config``.

    Returns the directory. Writes ``config.json`` and ``metadata.json`` for a new run; for an
    existing run with an identical config it leaves them as they are (the caller resumes). With a
    ``schema`` (see :data:`Schema`), absent settings declared with ``added_setting`` count as their
    defaults.

    Raises
    ------
    BoltzclfError
        If ``out`` is a file, holds a run with a different config (the message names the differing
        settings), or an input file recorded in its ``metadata.json`` has changed since.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BoltzclfError(f"--out {out}: exists and is not a directory")
    config_path = out / "config.json"
    resolved = json.loads(json.dumps(resolved_config))
    if config_path.exists() and _holds_work(out):
        previous = with_defaults(_read_json(config_path, out), schema)
        if previous != resolved:
            raise BoltzclfError(
                f"--out {out}: holds a run with a different config ({describe_differences(previous, resolved)}); "
                "choose a new directory (nothing was overwritten)")
        _check_inputs(out)
        for stale in atomic.remove_temporaries(out):
            log.info("removed %s, left by an interrupted write", stale)
        return out
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(config_path, resolved_config)
    atomic.write_json(out / "metadata.json", provenance.collect(seed, device, inputs))
    return out


def with_defaults(stored, schema: Schema):
    """``stored`` (a config as written to ``config.json``) with its absent settings at their defaults, as
    ``to_dict`` of ``schema`` writes it, when every setting it lacks is declared with
    :func:`~boltzclf.core.config.added_setting`; otherwise, or when it no longer parses (a setting
    removed, renamed or given an invalid value since), ``stored`` as it is, so the comparison names
    the difference."""
    if schema is None or not isinstance(stored, dict):
        return stored
    if isinstance(schema, dict):
        return {**stored, **{key: with_defaults(stored[key], part) for key, part in schema.items() if key in stored}}
    try:
        filled = json.loads(json.dumps(to_dict(from_mapping(schema, stored, "config.json"))))
    except BoltzclfError:
        return stored
    added = _differences(stored, filled, "")
    if all(old == ABSENT and _keeps_earlier_behaviour(schema, key.split(".")) for key, old, _ in added):
        return filled
    return stored


def _keeps_earlier_behaviour(schema: type, keys: list[str]) -> bool:
    """Whether the field at dotted ``keys`` inside dataclass ``schema`` is declared with ``added_setting``."""
    kind = schema
    for depth, key in enumerate(keys):
        while typing.get_origin(kind) in (Union, types.UnionType):  # Optional[X] / X | None: X
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        if typing.get_origin(kind) is dict:  # dict[str, X]: any key, then X
            kind = typing.get_args(kind)[1]
            continue
        if not dataclasses.is_dataclass(kind):
            return False
        fields = {field.name: field for field in dataclasses.fields(kind)}
        if key not in fields:
            return False
        if depth == len(keys) - 1:
            return bool(fields[key].metadata.get(KEEPS_EARLIER_BEHAVIOUR))
        kind = typing.get_type_hints(kind)[key]
    return False


def _holds_work(out: Path) -> bool:
    """Whether ``out`` holds anything besides its config and metadata records (and temporary files of
    interrupted writes)."""
    return any(p.name not in RECORDS and not atomic.is_temporary(p) for p in out.iterdir())


def _read_json(path: Path, out: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise BoltzclfError(f"{path}: unreadable; refusing to reuse {out}") from None


def describe_differences(old, new, prefix: str = "", limit: int = 5) -> str:
    """``"key: old -> new"`` for up to ``limit`` differing leaves of two JSON-like values (dotted keys)."""
    found = _differences(old, new, prefix)
    shown = "; ".join(f"{key or 'config'}: {a!r} -> {b!r}" for key, a, b in found[:limit])
    return shown + (f"; and {len(found) - limit} more" if len(found) > limit else "")


#: What :func:`describe_differences` shows for a setting one side lacks.
ABSENT = "<absent>"


def _differences(old, new, prefix: str) -> list[tuple[str, object, object]]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in list(old) + [k for k in new if k not in old]:
            name = f"{prefix}.{key}" if prefix else str(key)
            found += _differences(old.get(key, ABSENT), new.get(key, ABSENT), name)
        return found
    return [] if old == new else [(prefix, old, new)]


def _check_inputs(out: Path) -> None:
    """Refuse to resume when an input file recorded in ``metadata.json`` is missing or has changed."""
    metadata = out / "metadata.json"
    if not metadata.exists():
        return
    for path, recorded in _read_json(metadata, out).get("inputs", {}).items():
        if not Path(path).is_file():
            raise BoltzclfError(f"{path}: input of the run in {out} is missing; restore it to resume")
        if provenance.sha256(path) != recorded:
            raise BoltzclfError(f"{path}: changed since the run in {out} started (sha256 differs); resuming "
                                "would mix two inputs: restore the file or choose a new --out")
