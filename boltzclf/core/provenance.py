"""Provenance stamped into every output directory: versions, seed, device, git hash, checksums."""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Iterable

_PACKAGES = ("boltzclf", "torch", "numpy", "openmm", "openmmtools", "mdtraj", "pymbar", "torchdiffeq")


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(names: Iterable[str] = _PACKAGES) -> dict[str, str | None]:
    """Installed version of each named distribution (``None`` when absent)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_hash(directory: str | Path | None = None) -> str | None:
    """Commit hash of the source tree this package was loaded from, if it is a git checkout."""
    directory = Path(directory or Path(__file__).resolve().parents[2])
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def collect(seed: int | None, device: str, inputs: Iterable[str | Path] = ()) -> dict:
    """Provenance record for ``metadata.json``.

    Parameters
    ----------
    seed
        The run's master seed.
    device
        The torch device the run uses (``"cpu"``, ``"cuda"``...).
    inputs
        Input files whose SHA-256 checksums are recorded.
    """
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "device": device,
        "git_hash": git_hash(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "inputs": {str(p): sha256(p) for p in inputs},
        "cwd": os.getcwd(),  # what the run's relative paths are relative to
    }
