"""Start distributions of samplers: normalised centred Gaussians on a model's space.

A start distribution is any object with ``sample(n, generator) -> (n, *event)`` and
``log_prob(x) -> (n,)`` (float64, normalised); Gaussian mixtures qualify as they are.
"""
from __future__ import annotations

import math

import torch


class GaussianPrior:
    """N(0, v I) on the model's space: flat ``event_shape``, or the centred subspace (d = 3(n−1)) for particles.

    ``GaussianPrior.for_model(model, t)`` is the model's noisiest-level Gaussian, v = input_variance(t, σ_d).
    Samplers accept any start distribution with ``sample(n, generator) -> (n, *event)`` and
    ``log_prob(x) -> (n,)`` float64 (normalised), e.g. an exact noised
    :class:`~boltzclf.targets.gmm.GaussianMixture`.
    """

    def __init__(self, variance: float, event_shape: tuple[int, ...], particles: bool = False,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None):
        if not variance > 0:
            raise ValueError(f"prior variance must be positive, got {variance}")
        self.variance = float(variance)
        self.event_shape = tuple(event_shape)
        self.particles = particles
        self.dim = math.prod(self.event_shape) - (3 if particles else 0)
        self.dtype = dtype
        self.device = device

    @classmethod
    def on_space(cls, variance: float, space, dtype: torch.dtype = torch.float64) -> "GaussianPrior":
        """N(0, variance·I) on a model's space (its ``event_shape``, ``particles`` and device)."""
        return cls(variance, space.event_shape, space.particles, dtype, space.levels.device)

    @classmethod
    def for_model(cls, model, t: float, dtype: torch.dtype = torch.float64) -> "GaussianPrior":
        """The Gaussian N(0, α_t²(σ_d² + σ(t)²) I) that a diffusion model reduces to at large noise."""
        if model.process.kind == "interpolant":
            raise ValueError("an interpolant model has no Gaussian prior: pass the t_start distribution as prior")
        variance = model.process.input_variance(torch.tensor(float(t), dtype=torch.float64), model.sigma_data)
        return cls.on_space(float(variance), model, dtype)

    def _centre(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=-2, keepdim=True) if self.particles else x

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` samples ``(n, *event)`` (centred for particles)."""
        z = torch.randn((n,) + self.event_shape, generator=generator, dtype=self.dtype, device=generator.device)
        return self._centre(z).to(self.device) * math.sqrt(self.variance)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised log-density ``(n,)`` in float64 (of the centred part, on the subspace, for particles)."""
        sq = self._centre(x.to(torch.float64)).flatten(1).pow(2).sum(1)
        return -0.5 * sq / self.variance - 0.5 * self.dim * math.log(2.0 * math.pi * self.variance)
