"""Ancestral (DDPM-style) reverse-diffusion sampling along the model's level grid.

Between grid levels s < t of a linear diffusion, x_t = α_{s→t} x_s + γ_{s→t} ε. Given a denoised
estimate x̂0 = (x_t + γ_t² ∇log p̃_θ(t, x_t))/α_t (Tweedie), the step draws x_s from the Gaussian
posterior q(x_s | x_t, x0 = x̂0), whose precision is 1/γ_s² + α_{s→t}²/γ_{s→t}² and whose mean is
var · (α_s x̂0/γ_s² + α_{s→t} x_t/γ_{s→t}²). The chain starts from N(0, α_T²(σ_d² + σ_T²) I) at the
last level and returns the Tweedie estimate at the first level.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from boltzclf.diffusion.processes import per_sample


@dataclass
class AncestralResult:
    """Samples ``(N, *event)`` and the number of score evaluations spent."""

    samples: torch.Tensor
    n_score_evaluations: int


@torch.no_grad()
def ancestral_sample(model, n: int, generator: torch.Generator, batch_size: int = 4096) -> AncestralResult:
    """Draw ``n`` samples from a diffusion energy model by ancestral sampling over its grid."""
    if model.process.kind == "interpolant":
        raise ValueError("ancestral sampling needs a diffusion process, not an interpolant")
    device = model.levels.device
    chunks = [_sample_chunk(model, min(batch_size, n - start), generator, device)
              for start in range(0, n, batch_size)]
    return AncestralResult(torch.cat(chunks), n * model.n_levels)


def _sample_chunk(model, n: int, generator: torch.Generator, device) -> torch.Tensor:
    process = model.process
    levels = model.levels.to(torch.float64)
    shape = (n,) + model.event_shape
    var_top = process.input_variance(levels[-1], model.sigma_data)
    x = model.centre(torch.randn(shape, generator=generator, device=device)) * float(var_top.sqrt())
    for i in range(model.n_levels - 1, 0, -1):
        t, s = levels[i], levels[i - 1]
        x0_hat = _denoise(model, t, x)
        a_st, g_st = process.transition(s, t)
        a_s, g_s = process.alpha(s), process.gamma(s)
        precision = 1.0 / g_s**2 + a_st**2 / g_st**2
        mean = (a_s * x0_hat / g_s**2 + a_st * x / g_st**2) / precision
        noise = model.centre(torch.randn(shape, generator=generator, device=device))
        x = (mean + noise / precision.sqrt()).to(x.dtype)
    return _denoise(model, levels[0], x)


def _denoise(model, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    times = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
    score = model.score(times, x)
    gamma = model.process.gamma(times)
    return (x + per_sample(gamma**2, x) * score) / per_sample(model.process.alpha(times), x)
