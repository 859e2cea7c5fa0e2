"""Stochastic interpolants between two distributions (Albergo & Vanden-Eijnden; METHOD.md §1.1).

X_t = (1 − t) X_0 + t X_1 + γ(t) Z with the "brownian" γ(t) = γ_f √(t(1 − t)), Z independent of
(X_0, X_1). Unlike a diffusion there is no Markov transition between levels; training pairs draw
(X_0, X_1) from a coupling and independent noise per level.
"""
from __future__ import annotations

import torch

from boltzclf.diffusion.processes import per_sample


class StochasticInterpolant:
    """Linear interpolant with brownian noise γ(t) = γ_f √(t(1−t)) on t ∈ (0, 1)."""

    kind = "interpolant"

    def __init__(self, gamma_factor: float = 1.0):
        if gamma_factor <= 0:
            raise ValueError(f"gamma_factor must be positive, got {gamma_factor}")
        self.gamma_factor = gamma_factor

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, b_t) = (1 − t, t), the weights of X_0 and X_1."""
        return 1.0 - t, t

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        """γ(t) = γ_f √(t(1−t))."""
        return self.gamma_factor * torch.sqrt(t * (1.0 - t))

    def gamma_dot(self, t: torch.Tensor) -> torch.Tensor:
        """dγ/dt = γ_f (1 − 2t) / (2 √(t(1−t)))."""
        return self.gamma_factor * (1.0 - 2.0 * t) / (2.0 * torch.sqrt(t * (1.0 - t)))

    def conditioning(self, t: torch.Tensor) -> torch.Tensor:
        """The scalar fed to time embeddings: t itself."""
        return t

    def corrupt(self, batch: tuple[torch.Tensor, ...], t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = (1−t) x0 + t x1 + γ(t) z for ``batch = (x0, x1)``, per-sample ``t`` ``(B,)``."""
        x0, x1 = batch
        a, b = self.coefficients(t)
        return per_sample(a, x0) * x0 + per_sample(b, x0) * x1 + per_sample(self.gamma(t), x0) * noise

    def conditional_time_score(self, batch: tuple[torch.Tensor, ...], t: torch.Tensor, noise: torch.Tensor,
                               dim: int) -> torch.Tensor:
        """∂_t log p(x_t | x0, x1) = ⟨x1 − x0, z⟩/γ + (γ̇/γ)(‖z‖² − d), shape ``(B,)``."""
        x0, x1 = batch
        gamma = self.gamma(t)
        inner = ((x1 - x0) * noise).flatten(1).sum(1)
        return inner / gamma + self.gamma_dot(t) / gamma * (noise.flatten(1).pow(2).sum(1) - dim)

    def input_variance(self, t: torch.Tensor, sigma_data: float) -> torch.Tensor:
        """Variance ((1−t)² + t²)σ_d² + γ(t)² of x_t when both ends have per-dimension variance σ_d²."""
        a, b = self.coefficients(t)
        return (a**2 + b**2) * sigma_data**2 + self.gamma(t) ** 2

    def energy_scale(self, t: torch.Tensor, sigma_data: float) -> torch.Tensor:
        """Weight of the learned correction: 1 at every t (both ends are data distributions)."""
        return torch.ones_like(t)

    def __repr__(self) -> str:
        return f"StochasticInterpolant(gamma_factor={self.gamma_factor})"
