"""Conditional time-score matching (CtSM) regulariser, a baseline to DiffCLF (METHOD.md §4.1, §9.8).

The model's time score ∂_t log p̃_θ(t, x_t) = −∂_t U_θ is regressed onto the conditional time score,
with the corrected (+) sign: for diffusions (α̇/γ)⟨x0, z⟩ + (γ̇/γ)(‖z‖² − d), for interpolants
⟨x1 − x0, z⟩/γ + (γ̇/γ)(‖z‖² − d). Each term is divided by the target's variance per dimension,
(c/γ)² + 2(γ̇/γ)² with c = α̇σ_d (diffusions) or √2 σ_d (interpolants), so it is O(1) at every level
(the reference code's weights γ² or (γ/γ̇)² blow up at one end of the VP path).
"""
from __future__ import annotations

import torch

from boltzclf.losses.dsm import dsm_terms
from boltzclf.losses.levels import draw_levels, noisy_samples


class TimeScoreMatching:
    """DSM + λ·CtSM on ``replicas`` levels per data sample (compute-matched like the DSM baseline)."""

    def __init__(self, weight: float = 1.0, replicas: int = 1, dsm_weighting: str = "edm"):
        self.weight = weight
        self.replicas = replicas
        self.dsm_weighting = dsm_weighting

    def __call__(self, model, batch: tuple[torch.Tensor, ...], generator: torch.Generator | None
                 ) -> dict[str, torch.Tensor]:
        b = batch[0].shape[0]
        levels = draw_levels(model.n_levels, b, self.replicas, "uniform", generator, batch[0].device)
        times, x_t, noise, data = noisy_samples(model, batch, levels, False, generator)
        dsm, _ = dsm_terms(model, times, x_t, noise, self.dsm_weighting)
        target = model.process.conditional_time_score(data, times, noise, model.dim)
        predicted = -model.time_derivative(times, x_t, create_graph=True)
        ctsm = (predicted - target) ** 2 / (_target_variance(model, times) * model.dim)
        dsm = dsm.reshape(b, -1).mean(1)
        ctsm = ctsm.reshape(b, -1).mean(1)
        return {"loss": dsm + self.weight * ctsm, "dsm": dsm.detach(), "ctsm": ctsm.detach()}


def _target_variance(model, t: torch.Tensor) -> torch.Tensor:
    """Per-dimension variance of the conditional time score for data of variance σ_d²."""
    process = model.process
    gamma = process.gamma(t)
    if process.kind == "interpolant":
        mean_term = 2.0**0.5 * model.sigma_data
    else:
        mean_term = process.alpha_dot(t) * model.sigma_data
    return (mean_term / gamma) ** 2 + 2.0 * (process.gamma_dot(t) / gamma) ** 2
