"""Linear diffusions X_t = α_t X_0 + γ_t Z with closed-form marginals (METHOD.md §1).

Conventions: ``t`` is a tensor of times (any shape); every coefficient is returned with the same
shape, dtype and device. σ(t) = γ_t/α_t is the "unscaled" noise level used by EDM preconditioning,
and the log-SNR is λ(t) = 2 log α_t − 2 log γ_t = −2 log σ(t).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class LinearDiffusion(ABC):
    """Base class of diffusions with Gaussian transitions; subclasses give α_t, σ(t) and their inverse."""

    kind: str

    @abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Mean factor α_t = s(t), same shape as ``t``."""

    @abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Unscaled noise level σ(t) = γ_t/α_t, same shape as ``t``."""

    @abstractmethod
    def t_from_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`sigma`."""

    @abstractmethod
    def alpha_dot(self, t: torch.Tensor) -> torch.Tensor:
        """dα/dt."""

    @abstractmethod
    def gamma_dot(self, t: torch.Tensor) -> torch.Tensor:
        """dγ/dt."""

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        """Marginal noise standard deviation γ_t = α_t σ(t)."""
        return self.alpha(t) * self.sigma(t)

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """λ(t) = −2 log σ(t)."""
        return -2.0 * torch.log(self.sigma(t))

    def t_from_log_snr(self, log_snr: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`log_snr`."""
        return self.t_from_sigma(torch.exp(-0.5 * log_snr))

    def conditioning(self, t: torch.Tensor) -> torch.Tensor:
        """The scalar fed to time embeddings: the log-SNR (standardised by the model over its grid)."""
        return self.log_snr(t)

    def transition(self, s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Coefficients of X_t | X_s = α_{s→t} X_s + γ_{s→t} Z for s ≤ t.

        Returns
        -------
        (alpha_st, gamma_st)
            α_{s→t} = α_t/α_s and γ_{s→t} = α_t √(σ(t)² − σ(s)²), broadcast shape of s and t.
        """
        alpha_st = self.alpha(t) / self.alpha(s)
        gamma_st = self.alpha(t) * torch.sqrt(torch.clamp(self.sigma(t) ** 2 - self.sigma(s) ** 2, min=0.0))
        return alpha_st, gamma_st

    def corrupt(self, batch: tuple[torch.Tensor, ...], t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = α_t x0 + γ_t z for ``batch = (x0,)``, per-sample times ``t`` ``(B,)``, ``noise`` like x0."""
        x0 = batch[0]
        return per_sample(self.alpha(t), x0) * x0 + per_sample(self.gamma(t), x0) * noise

    def conditional_time_score(self, batch: tuple[torch.Tensor, ...], t: torch.Tensor, noise: torch.Tensor,
                               dim: int) -> torch.Tensor:
        """∂_t log p(x_t | x0) at x_t = α_t x0 + γ_t z: (α̇/γ)⟨x0, z⟩ + (γ̇/γ)(‖z‖² − d), shape ``(B,)``.

        ``dim`` is the number of degrees of freedom d (3(n−1) for centred particles).
        """
        x0 = batch[0]
        gamma = self.gamma(t)
        inner = (x0 * noise).flatten(1).sum(1)
        return self.alpha_dot(t) / gamma * inner + self.gamma_dot(t) / gamma * (noise.flatten(1).pow(2).sum(1) - dim)

    def input_variance(self, t: torch.Tensor, sigma_data: float) -> torch.Tensor:
        """Variance α_t²(σ_d² + σ(t)²) of x_t for data of per-dimension variance σ_d² (EDM c_in)."""
        return self.alpha(t) ** 2 * (sigma_data**2 + self.sigma(t) ** 2)

    def energy_scale(self, t: torch.Tensor, sigma_data: float) -> torch.Tensor:
        """Weight σ_d/σ(t) of the learned correction in the EDM energy preconditioning (→ 0 at high noise)."""
        return sigma_data / self.sigma(t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class VariancePreserving(LinearDiffusion):
    """Linear VP SDE: β(t) = β_min + t (β_max − β_min) on t ∈ [0, 1] (Song et al. 2021).

    A(t) = β_min t + (β_max − β_min) t²/2, α_t = e^{−A/2}, σ(t)² = e^{A} − 1, γ_t² = 1 − e^{−A}.
    """

    kind = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min = beta_min
        self.beta_max = beta_max

    def _integral(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """β(t)."""
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * self._integral(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.expm1(self._integral(t)))

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(-torch.expm1(-self._integral(t)))

    def t_from_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        a = torch.log1p(sigma**2)  # A(t); solve β_min t + (Δβ/2) t² = a
        db = self.beta_max - self.beta_min
        return (-self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * db * a)) / db

    def alpha_dot(self, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * self.beta(t) * self.alpha(t)

    def gamma_dot(self, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.beta(t) * torch.exp(-self._integral(t)) / self.gamma(t)

    def __repr__(self) -> str:
        return f"VariancePreserving(beta_min={self.beta_min}, beta_max={self.beta_max})"


class EDM(LinearDiffusion):
    """Variance-exploding diffusion with σ(t) = t and α_t = 1 (Karras et al. 2022)."""

    kind = "edm"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def t_from_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma

    def alpha_dot(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def gamma_dot(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)



def per_sample(coefficient: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample coefficients ``(B,)`` to broadcast against ``like`` ``(B, ...)``."""
    return coefficient.reshape((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)
