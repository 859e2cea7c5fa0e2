"""Ancestral reverse-diffusion sampling: the reverse kernels of :mod:`boltzclf.sampling.kernels`, unweighted.

The chain starts from the path's start distribution at the top level (the model's Gaussian prior by
default, or given samples) and applies one reverse kernel per level down to the first level, whose
time t_0 is also the time of the returned samples (a sample of p_{t_0}, not a denoised mean). It is
exact when the kernels are (Gaussian data with the ``ddpm`` kernel); otherwise its bias shrinks with
the number of levels, and SMC (:mod:`boltzclf.sampling.smc`) removes it by weighting.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.paths import LearnedPath


@dataclass
class AncestralResult:
    """Samples ``(N, *event)`` at time ``time`` and the number of score evaluations spent."""

    samples: torch.Tensor
    n_score_evaluations: int
    time: float


@torch.no_grad()
def ancestral_sample(model, n: int, generator: torch.Generator, batch_size: int = 4096, kind: str = "ddpm",
                     posterior_variance: str = "isotropic", times: torch.Tensor | None = None,
                     start: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> AncestralResult:
    """Draw ``n`` samples from a diffusion energy model by ancestral sampling.

    Parameters
    ----------
    model
        A diffusion :class:`~boltzclf.models.energy.TimeDependentEnergy`.
    kind, posterior_variance
        Reverse kernel (see :class:`~boltzclf.sampling.kernels.DiffusionKernels`).
    times
        Ascending level times ``(K,)`` (default: the model's grid).
    start
        Optional ``(n, *event)`` samples at the top level (default: the model's Gaussian prior).
    dtype
        Of the samples (default: float32, or ``start``'s dtype).
    """
    if model.process.kind == "interpolant":
        raise ValueError("ancestral sampling needs a diffusion process, not an interpolant")
    if start is not None and start.shape[0] != n:
        raise ValueError(f"start holds {start.shape[0]} samples, expected n = {n}")
    path = LearnedPath(model, times=times)
    kernels = DiffusionKernels(model.process, path.times, model, model.sigma_data, kind, posterior_variance)
    dtype = dtype or (start.dtype if start is not None else torch.float32)
    device = model.levels.device
    chunks = []
    for first in range(0, n, batch_size):
        size = min(batch_size, n - first)
        if start is None:
            x, _ = path.initial(size, generator, dtype, device)
        else:
            x = start[first:first + size].to(device=device, dtype=dtype)
        chunks.append(_descend(path, kernels, x, generator))
    return AncestralResult(torch.cat(chunks), n * (path.n_levels - 1), float(path.times[0]))


def _descend(path: LearnedPath, kernels: DiffusionKernels, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    for k in range(path.n_levels - 2, -1, -1):
        _, score = path.log_density(k + 1, x)
        hessian = path.hessian(k + 1, x) if kernels.needs_hessian else None
        x, _ = kernels.reverse(k, x, score, generator, hessian)
    return x
