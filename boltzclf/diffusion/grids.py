"""Fixed, ascending grids of noise levels ("levels") on which energies and free energies are trained.

Every function returns a float64 tensor of shape ``(n_levels,)``, ascending in t (from data to noise).
"""
from __future__ import annotations

import torch

from boltzclf.diffusion.processes import LinearDiffusion


def uniform_grid(t_min: float, t_max: float, n_levels: int) -> torch.Tensor:
    """Times uniformly spaced on [t_min, t_max] (the reference code's GMM/SI grids)."""
    _check(t_min, t_max, n_levels)
    return torch.linspace(t_min, t_max, n_levels, dtype=torch.float64)


def arcsine_grid(t_min: float, t_max: float, n_levels: int) -> torch.Tensor:
    """Times t = sin²(πs/2) for s uniform between the preimages of t_min and t_max (t_max ≤ 1).

    Level density ∝ 1/√(t(1−t)): dense near both ends, where an interpolant's noise γ_f √(t(1−t))
    changes fastest, so finite differences between neighbouring levels stay small there.
    """
    _check(t_min, t_max, n_levels)
    if t_max > 1.0:
        raise ValueError(f"an arcsine grid lives on (0, 1], got t_max = {t_max}")
    ends = torch.asin(torch.sqrt(torch.tensor([t_min, t_max], dtype=torch.float64)))
    times = torch.sin(torch.linspace(float(ends[0]), float(ends[1]), n_levels, dtype=torch.float64)) ** 2
    times[0], times[-1] = t_min, t_max  # remove round-off at the ends
    return times


def karras_grid(sigma_min: float, sigma_max: float, n_levels: int, rho: float = 7.0) -> torch.Tensor:
    """EDM noise levels σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, in ascending order.

    For the EDM process t = σ, so these are also times.
    """
    _check(sigma_min, sigma_max, n_levels)
    ramp = torch.linspace(0.0, 1.0, n_levels, dtype=torch.float64)
    inv_rho = 1.0 / rho
    sigmas = (sigma_max**inv_rho + ramp * (sigma_min**inv_rho - sigma_max**inv_rho)) ** rho
    return torch.flip(sigmas, dims=(0,))


def log_snr_grid(process: LinearDiffusion, t_min: float, t_max: float, n_levels: int) -> torch.Tensor:
    """Times whose log-SNR is uniformly spaced between λ(t_min) and λ(t_max)."""
    _check(t_min, t_max, n_levels)
    ends = process.log_snr(torch.tensor([t_min, t_max], dtype=torch.float64))
    lambdas = torch.linspace(float(ends[0]), float(ends[1]), n_levels, dtype=torch.float64)
    times = process.t_from_log_snr(lambdas)
    times[0], times[-1] = t_min, t_max  # remove round-off at the ends
    return times


def _check(low: float, high: float, n_levels: int) -> None:
    if not (0 < low < high):
        raise ValueError(f"grid bounds must satisfy 0 < low < high, got {low}, {high}")
    if n_levels < 2:
        raise ValueError(f"a grid needs at least 2 levels, got {n_levels}")
