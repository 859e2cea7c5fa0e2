"""Drawing grid levels and noisy samples for the losses."""
from __future__ import annotations

import torch

SCHEMES = ("uniform", "adjacent", "distinct")


def draw_levels(n_levels: int, batch: int, k: int, scheme: str, generator: torch.Generator | None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Grid indices ``(batch, k)``.

    Schemes: ``"uniform"`` i.i.d. uniform (levels may coincide; the reference code's binary default),
    ``"adjacent"`` a uniform level and its next one (k = 2), ``"distinct"`` k different levels per row.
    """
    if scheme == "uniform":
        return torch.randint(n_levels, (batch, k), generator=generator, device=device)
    if scheme == "adjacent":
        if k != 2:
            raise ValueError("adjacent level pairs need k = 2")
        first = torch.randint(n_levels - 1, (batch, 1), generator=generator, device=device)
        return torch.cat([first, first + 1], dim=1)
    if scheme == "distinct":
        if k > n_levels:
            raise ValueError(f"cannot draw {k} distinct levels from {n_levels}")
        weights = torch.ones(batch, n_levels, device=device)
        return torch.multinomial(weights, k, replacement=False, generator=generator)
    raise ValueError(f"unknown level scheme {scheme!r}; use one of {SCHEMES}")


def replicate(batch: tuple[torch.Tensor, ...], k: int) -> tuple[torch.Tensor, ...]:
    """Repeat each data sample k times along a new axis 1 and flatten: ``(B, ...)`` → ``(B·k, ...)``."""
    return tuple(x.repeat_interleave(k, dim=0) for x in batch)


def noisy_samples(model, batch: tuple[torch.Tensor, ...], levels: torch.Tensor, shared_noise: bool,
                  generator: torch.Generator | None):
    """Noisy samples of each row's data at each of its levels.

    Parameters
    ----------
    model
        The energy model (gives the process, grid and the noise space).
    batch
        Data tuple, tensors ``(B, *event)``.
    levels
        ``(B, k)`` grid indices.
    shared_noise
        Use the same z for all k levels of a row (else independent).

    Returns
    -------
    (times, x_t, noise, data)
        Flattened over (B, k) in row-major order: ``(B·k,)``, ``(B·k, *event)``, ``(B·k, *event)``
        and the replicated data tuple.
    """
    b, k = levels.shape
    data = replicate(batch, k)
    if shared_noise:
        noise = model.noise_like(batch[0], generator).repeat_interleave(k, dim=0)
    else:
        noise = model.noise_like(data[0], generator)
    times = model.levels[levels.reshape(-1)].to(batch[0].dtype)
    x_t = model.process.corrupt(data, times, noise)
    return times, x_t, noise, data
