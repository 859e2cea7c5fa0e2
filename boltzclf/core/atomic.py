"""Atomic file writes: write to a temporary file in the same directory, then rename.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never a
partial write, even if the process is killed mid-write.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import, so no write ever changes the process umask


def _atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name keeps the target's suffix: writers such as np.savez and mdtraj go by it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
