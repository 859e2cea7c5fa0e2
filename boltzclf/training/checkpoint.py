"""Checkpoints: plain tensors and containers only (loaded with ``weights_only=True``; no pickled code).

Contents: format tag, package version, resolved config, step, model and EMA state dicts (the free
energies are part of them and also stored on their own), optimizer state and RNG states.
"""
from __future__ import annotations

from pathlib import Path

import torch

from boltzclf import __version__
from boltzclf.core import atomic
from boltzclf.core.errors import CheckpointError

FORMAT = "boltzclf-checkpoint/1"


def save(path: str | Path, *, config: dict, step: int, model, ema, optimizer, generator: torch.Generator) -> None:
    """Atomically write a training checkpoint."""
    atomic.torch_save(path, {
        "format": FORMAT,
        "version": __version__,
        "config": config,
        "step": step,
        "model": model.state_dict(),
        "ema": ema.shadow.state_dict() if ema is not None else None,
        "free_energies": model.free_energies.detach().cpu(),
        "optimizer": optimizer.state_dict(),
        "rng": {"generator": generator.get_state(), "generator_device": generator.device.type,
                "torch_cpu": torch.get_rng_state()},
    })


def load(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save`.

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable, or not a boltzclf checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a boltzclf checkpoint (format tag missing or unknown)")
    return data


#: Parameters a checkpoint may lack (added after it was written); they keep their initial values.
OPTIONAL_WEIGHTS = ("end_free_energies",)


def load_weights(model, state: dict, source: str | Path) -> None:
    """Load a state dict into ``model``, naming ``source`` if shapes or keys disagree (only the
    parameters in :data:`OPTIONAL_WEIGHTS` may be missing)."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [key for key in missing if key not in OPTIONAL_WEIGHTS]
        if missing or unexpected:
            raise RuntimeError(f"missing keys {missing}, unexpected keys {unexpected}")
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{source}: weights do not fit the configured model ({first})") from None
