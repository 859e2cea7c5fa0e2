"""Output directories of runs: resolved config, provenance, and the resume/overwrite rule.

A run directory holds ``config.json`` (the fully resolved config) and ``metadata.json``
(provenance, with the sha256 of every input file). Running the same command again resumes, after
checking that no input file has changed; running a *different* config into a directory that already
holds a run is refused, naming the settings that differ, so no existing output is overwritten. A
directory holding nothing but those two files (a start that failed before any work) is taken over
by the new config.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Union

from boltzclf.core import atomic, provenance
from boltzclf.core.config import from_mapping, to_dict
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
    ``schema`` (see :data:`Schema`), settings the stored config lacks count as their defaults.

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
    """``stored`` (a config as written to ``config.json``) with every setting it lacks at its default,
    as ``to_dict`` of ``schema`` writes it; a part that no longer parses (a setting removed, renamed
    or given an invalid value since) is left as stored, so the comparison names the difference."""
    if schema is None or not isinstance(stored, dict):
        return stored
    if isinstance(schema, dict):
        return {**stored, **{key: with_defaults(stored[key], part) for key, part in schema.items() if key in stored}}
    try:
        return json.loads(json.dumps(to_dict(from_mapping(schema, stored, "config.json"))))
    except BoltzclfError:
        return stored


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


def _differences(old, new, prefix: str) -> list[tuple[str, object, object]]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in list(old) + [k for k in new if k not in old]:
            name = f"{prefix}.{key}" if prefix else str(key)
            found += _differences(old.get(key, "<absent>"), new.get(key, "<absent>"), name)
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
