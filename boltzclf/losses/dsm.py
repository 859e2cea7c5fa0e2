"""Denoising score matching in noise-prediction form (METHOD.md §2.3).

With x_t = α_t x0 + γ_t z (or the interpolant analogue) and model score s = ∇ₓ log p̃_θ(t, x_t), the
per-sample loss is w(t) ‖z + γ_t s‖² / d. For diffusions the EDM weighting
λ(t)‖D_θ − x0‖²/d with λ = (σ² + σ_d²)/(σ² σ_d²) equals this with w = (σ² + σ_d²)/σ_d². For interpolants
the weighting is "uniform" (w = 1), "linear" (w = 1/γ) or "square" (w = 1/γ², plain score matching),
with optional antithetic noise (±z).
"""
from __future__ import annotations

import torch

from boltzclf.losses.levels import draw_levels, noisy_samples

WEIGHTINGS = ("edm", "uniform", "linear", "square")


def dsm_weight(model, t: torch.Tensor, weighting: str) -> torch.Tensor:
    """w(t) for per-sample times ``t`` ``(N,)``."""
    if weighting == "edm":
        sigma = model.process.sigma(t)
        return (sigma**2 + model.sigma_data**2) / model.sigma_data**2
    gamma = model.process.gamma(t)
    if weighting == "uniform":
        return torch.ones_like(t)
    if weighting == "linear":
        return 1.0 / gamma
    if weighting == "square":
        return 1.0 / gamma**2
    raise ValueError(f"unknown DSM weighting {weighting!r}; use one of {WEIGHTINGS}")


def dsm_terms(model, times: torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor, weighting: str
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample DSM losses and unnormalised log-densities at (times, x_t), both ``(N,)``.

    The score keeps its graph, so the loss is differentiable w.r.t. θ.
    """
    logp, score = model.log_prob_and_score(times, x_t, create_graph=True)
    gamma = model.process.gamma(times).reshape((-1,) + (1,) * (x_t.dim() - 1))
    residual = model.centre(noise + gamma * score)
    loss = dsm_weight(model, times, weighting) * residual.flatten(1).pow(2).sum(1) / model.dim
    return loss, logp


class DenoisingScoreMatching:
    """DSM on ``replicas`` independent levels per data sample (the compute-matched baseline rule:
    with ``replicas = k`` it costs as many score evaluations as a k-level classification loss).

    Parameters
    ----------
    weighting
        ``"edm"`` for diffusions; ``"uniform" | "linear" | "square"`` for interpolants.
    replicas
        Levels drawn per data sample (each with its own noise); the loss averages over them.
    antithetic
        Also evaluate at the mirrored noise −z and average (interpolants).
    """

    def __init__(self, weighting: str = "edm", replicas: int = 1, antithetic: bool = False):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown DSM weighting {weighting!r}; use one of {WEIGHTINGS}")
        self.weighting = weighting
        self.replicas = replicas
        self.antithetic = antithetic

    def __call__(self, model, batch: tuple[torch.Tensor, ...], generator: torch.Generator | None
                 ) -> dict[str, torch.Tensor]:
        b = batch[0].shape[0]
        levels = draw_levels(model.n_levels, b, self.replicas, "uniform", generator, batch[0].device)
        times, x_t, noise, data = noisy_samples(model, batch, levels, False, generator)
        if self.antithetic:
            x_mirror = model.process.corrupt(data, times, -noise)
            times = torch.cat([times, times])
            x_t = torch.cat([x_t, x_mirror])
            noise = torch.cat([noise, -noise])
        loss, _ = dsm_terms(model, times, x_t, noise, self.weighting)
        per_sample = loss.reshape(-1, b, self.replicas).mean(dim=(0, 2))
        return {"loss": per_sample, "dsm": per_sample.detach()}
