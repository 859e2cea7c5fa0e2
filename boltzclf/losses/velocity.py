"""Velocity matching: the regression loss of an interpolant's velocity field
(:mod:`boltzclf.models.velocity`)."""
from __future__ import annotations

import torch


def velocity_matching_loss(model, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator,
                           t_range: tuple[float, float]) -> dict[str, torch.Tensor]:
    """Per-sample squared error ‖v_θ(t, x_t) − (x1 − x0)‖² / (d σ_d²) at t ~ U(t_range), ``{"loss": (B,)}``.

    Its minimiser over all functions is the conditional mean E[x1 − x0 | x_t] (``batch``: aligned pairs
    ``(x0, x1)``, each ``(B, n, 3)`` [nm], centred).
    """
    x0, x1 = batch
    low, high = t_range
    t = low + (high - low) * torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    noise = noise - noise.mean(dim=-2, keepdim=True)
    x_t = model.process.corrupt((x0, x1), t, noise)
    error = model(t, x_t) - (x1 - x0)
    return {"loss": error.flatten(1).pow(2).mean(1) / model.sigma_data ** 2}
