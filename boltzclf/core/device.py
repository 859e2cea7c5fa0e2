"""Device selection: CUDA when available, else CPU; an explicit choice overrides."""
from __future__ import annotations

import torch

from boltzclf.core.errors import BoltzclfError


def resolve_device(choice: str = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a :class:`torch.device`.

    Raises
    ------
    BoltzclfError
        If CUDA is requested but not available.
    """
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise BoltzclfError(f"--device: unknown device {choice!r} (use auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BoltzclfError(f"--device {choice}: CUDA is not available on this machine")
    return device
