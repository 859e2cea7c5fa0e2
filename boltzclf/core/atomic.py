"""Atomic, durable file writes: write to a temporary file in the same directory, flush it to disk,
then rename, and flush the directory entry.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never a
partial write, even if the process is killed mid-write or the machine loses power after the rename.
A failed write (a full disk, a read-only folder) leaves the old file and raises a
:class:`~boltzclf.core.errors.BoltzclfError` naming the file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from boltzclf.core.errors import BoltzclfError, CheckpointError, one_line


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import, so no write ever changes the process umask


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is the temporary file of an atomic write (``.<stem>.<random>.tmp<suffix>``)."""
    name = Path(path).name
    return name.startswith(".") and ".tmp" in name


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writes killed before their rename left under ``folder``;
    returns them. Call it only while no other process writes into ``folder``."""
    stale = [p for p in Path(folder).rglob(".*.tmp*") if p.is_file() and is_temporary(p)]
    for path in stale:
        path.unlink()
    return stale


def _atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name keeps the target's suffix: writers such as np.savez and mdtraj go by it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) or _is_write_failure(exc):
            raise BoltzclfError(f"{path}: cannot write it ({exc}); the previous version, if any, is "
                                "untouched") from None
        raise
    return path


def _fsync(path: str | os.PathLike) -> None:
    """Flush a file's (or a directory's) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_write_failure(exc: BaseException) -> bool:
    """torch's zip writer reports a full disk or an I/O error as a RuntimeError of its C++ stream
    (``inline_container.cc``: "unexpected pos", "file write failed")."""
    return isinstance(exc, RuntimeError) and "inline_container" in str(exc)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return _atomic(path, write)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (non-finite floats become ``null``)."""
    return write_text(path, json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")


def torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically :func:`torch.save` ``obj`` (plain tensors and containers only; no pickled code)."""
    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def torch_load(path: str | os.PathLike) -> Any:
    """Read a file written by :func:`torch_save` (tensors and containers only).

    Raises
    ------
    CheckpointError
        If the file is missing, truncated or corrupt, naming it.
    """
    try:
        return torch.load(path, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError... for bad files
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__}: {one_line(exc)}); the run cannot "
                              "use it: delete the run directory to start again") from None


def save_npz(path: str | os.PathLike, **arrays) -> Path:
    """Atomically write ``arrays`` with :func:`numpy.savez` (``path`` should end in ``.npz``)."""
    return _atomic(path, lambda tmp: np.savez(tmp, **arrays))


def save_with(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Atomically write ``path`` with ``writer(temporary_path)``, e.g. ``trajectory.save_dcd``."""
    return _atomic(path, writer)


def save_figure(path: str | os.PathLike, figure) -> Path:
    """Atomically save a matplotlib figure as PNG."""
    return _atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


def _finite(value: Any) -> Any:
    """Replace NaN/inf floats by None recursively so the JSON is standard."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
