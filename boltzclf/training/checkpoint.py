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


def save(path: str | Path, *, config: dict, step: int, model, ema, optimizer,
         generator_states: list[torch.Tensor], generator_device: str) -> None:
    """Atomically write a training checkpoint; ``generator_states`` are the states of the training
    random streams (one per ``training.shards``), of generators on device type ``generator_device``."""
    atomic.torch_save(path, {
        "format": FORMAT,
        "version": __version__,
        "config": config,
        "step": step,
        "model": model.state_dict(),
        "ema": ema.shadow.state_dict() if ema is not None else None,
        # an energy's level free energies f, for a reader without the model (None: a model without f)
        "free_energies": model.free_energies.detach().cpu() if hasattr(model, "free_energies") else None,
        "optimizer": optimizer.state_dict(),
        "rng": {"generator": generator_states[0], "more_generators": list(generator_states[1:]),
                "generator_device": generator_device, "torch_cpu": torch.get_rng_state()},
    })


def generator_states(state: dict) -> list[torch.Tensor]:
    """The random streams' states of a loaded checkpoint (checkpoints of one stream have no
    ``more_generators``)."""
    return [state["rng"]["generator"], *state["rng"].get("more_generators", [])]


def load(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save`.

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable (truncated, corrupt, holds pickled code), not a boltzclf
        checkpoint, or an entry is missing or of the wrong kind; the message names the file and entry.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {_first_line(exc)})"
                              ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a boltzclf checkpoint (format tag missing or unknown)")
    problem = _structure_problem(data)
    if problem is not None:
        raise CheckpointError(f"{path}: corrupt checkpoint: {problem}")
    return data


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, shortened (torch's can span many lines)."""
    message = str(exc)
    marker = "WeightsUnpickler error:"  # torch's weights_only refusal opens with boilerplate; the reason follows
    if marker in message:
        message = "corrupt, or holds more than tensors and containers: " + message.split(marker, 1)[1].strip()
    lines = [line.strip() for line in message.replace(": \n", ": ").splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines[0] if lines else "")
    return text if len(text) <= limit else text[:limit] + "..."


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                           for k, v in value.items())


def _structure_problem(data: dict) -> str | None:
    """What is wrong with the entries of a tagged checkpoint (None if nothing)."""
    step = data.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"'step' must be a non-negative integer, got {step!r}"
    if not isinstance(data.get("config"), dict):
        return "'config' is missing or not a mapping"
    if not _is_state_dict(data.get("model")):
        return "'model' is missing or not a mapping of names to tensors"
    if "ema" not in data or not (data["ema"] is None or _is_state_dict(data["ema"])):
        return "'ema' is missing or not a mapping of names to tensors (nor null)"
    optimizer = data.get("optimizer")
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
            and isinstance(optimizer.get("param_groups"), list)):
        return "'optimizer' is missing or not an optimizer state (state, param_groups)"
    rng = data.get("rng")
    if not (isinstance(rng, dict) and isinstance(rng.get("generator_device"), str)
            and all(isinstance(rng.get(k), torch.Tensor) and rng[k].dtype == torch.uint8
                    for k in ("generator", "torch_cpu"))):
        return "'rng' is missing or not random-generator states (generator, generator_device, torch_cpu)"
    more = rng.get("more_generators", [])
    if not (isinstance(more, list) and all(isinstance(s, torch.Tensor) and s.dtype == torch.uint8 for s in more)):
        return "'rng.more_generators' is not a list of random-generator states"
    for entry in ("model", "ema"):
        for key, value in (data[entry] or {}).items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return f"{entry}.{key} holds NaN or infinite values"
    return None


#: Parameters a checkpoint may lack (added after it was written); they keep their initial values.
OPTIONAL_WEIGHTS = ("end_free_energies",)


def load_weights(model, state: dict, source: str | Path) -> None:
    """Load a state dict into ``model``, naming ``source`` and the first offending entry if keys or
    shapes disagree (only the parameters in :data:`OPTIONAL_WEIGHTS` may be missing)."""
    if not _is_state_dict(state):
        raise CheckpointError(f"{source}: weights are not a mapping of names to tensors")
    expected = model.state_dict()
    missing = [key for key in expected if key not in state and key not in OPTIONAL_WEIGHTS]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"] if missing else []) + \
                ([f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}"] if unexpected else [])
        raise CheckpointError(f"{source}: weights do not fit the configured model ({'; '.join(parts)})")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{source}: weights do not fit the configured model ({key}: shape "
                                  f"{tuple(value.shape)} in the checkpoint, {tuple(expected[key].shape)} in the model)")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: weights do not fit the configured model ({_first_line(exc)})") from None
