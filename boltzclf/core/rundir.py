"""Output directories of runs: resolved config, provenance, and the resume/overwrite rule.

A run directory holds ``config.json`` (the fully resolved config) and ``metadata.json``
(provenance). Running the same command again resumes; running a *different* config into a
directory that already holds a run is refused, so no existing output is overwritten.
"""
from __future__ import annotations

import json
from pathlib import Path

from boltzclf.core import atomic, provenance
from boltzclf.core.errors import BoltzclfError


def prepare(out: str | Path, resolved_config: dict, *, seed: int | None, device: str,
            inputs: tuple = ()) -> Path:
    """Create or reopen run directory ``out`` for ``resolved_config``.

    Returns the directory. Writes ``config.json`` and ``metadata.json`` for a new run; for an
    existing run with an identical config it leaves them as they are (the caller resumes).

    Raises
    ------
    BoltzclfError
        If ``out`` is a file, or holds a run with a different config.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BoltzclfError(f"--out {out}: exists and is not a directory")
    config_path = out / "config.json"
    if config_path.exists():
        try:
            previous = json.loads(config_path.read_text())
        except json.JSONDecodeError:
            raise BoltzclfError(f"{config_path}: unreadable; refusing to reuse {out}") from None
        if previous != json.loads(json.dumps(resolved_config)):
            raise BoltzclfError(
                f"--out {out}: holds a run with a different config; choose a new directory "
                "(nothing was overwritten)"
            )
        return out
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(config_path, resolved_config)
    atomic.write_json(out / "metadata.json", provenance.collect(seed, device, inputs))
    return out
