"""Annealed importance sampling (AIS) from exact samples of one density to another.

Given N exact samples of π_a ∝ π̃_a and an unnormalised π̃_b, AIS (Neal 2001) walks every sample
through the geometric means

    log π̃_j(x) = (1 − β_j) log π̃_a(x) + β_j log π̃_b(x),   0 = β_0 < β_1 < … < β_n = 1   (β_j = j/n),

adding (β_{j+1} − β_j)[log π̃_b − log π̃_a](x_j) to its log-weight and then moving x with MALA steps
that leave π̃_{j+1} invariant. Each final weight w satisfies E[exp w] = Z_b/Z_a exactly for any n and
any step size; n = 1 without moves is the one-sided exponential average (Zwanzig's FEP). With more
levels the weights spread less (the work approaches the reversible limit), so ln mean exp w has both
less variance and less of the small-sample bias of a heavy-tailed exponential average. There is no
resampling: the N weights are independent, so any bootstrap over them is valid.

With ``replicas`` R > 1 every sample starts R independent walks and its log-weight is
ln mean_r exp w_r: still E[exp w] = Z_b/Z_a, the N samples stay independent (a bootstrap over them is
the cluster bootstrap over samples and their walks), and the part of the spread that comes from the
MALA noise of one walk falls as 1/R, the part that comes from the starting sample does not.

The learned solvation estimate uses it for its two end corrections (the learned energy at t_min or
t_max against the true end density), :mod:`boltzclf.pipelines.solvation_learned`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from boltzclf.sampling.mcmc import adaptive_mala_moves

LogDensity = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AnnealingResult:
    """``log_weights`` ``(N,)`` float64 with E[exp w] = Z_b/Z_a, one per starting sample (its walks
    pooled); ``walk_log_weights`` ``(N, R)`` those of each walk; ``acceptance`` the mean MALA acceptance
    per level ``(n,)`` (NaN without moves); ``step_size`` the last adapted MALA step (units of x²)."""

    log_weights: torch.Tensor
    walk_log_weights: torch.Tensor
    acceptance: torch.Tensor
    step_size: float


def annealed_log_weights(x: torch.Tensor, log_a: LogDensity, log_b: LogDensity, n_levels: int,
                         mcmc_steps: int, step_size: float, generator: torch.Generator,
                         project: Callable[[torch.Tensor], torch.Tensor] | None = None,
                         target_acceptance: float = 0.574, replicas: int = 1,
                         progress: bool = False) -> AnnealingResult:
    """AIS log-weights from exact samples ``x`` of π_a to π̃_b (see the module docstring).

    Parameters
    ----------
    x
        ``(N, *event)`` exact, independent samples of π_a (e.g. decorrelated MD frames, nm).
    log_a, log_b
        ``x -> (N,)`` unnormalised log-densities (e.g. −u(x) in kT), differentiable in x.
    n_levels
        Annealing levels n ≥ 1 (β_j = j/n).
    mcmc_steps
        MALA steps after each level (0: plain importance sampling along the levels).
    step_size
        Initial MALA step h (units of x², e.g. nm²), adapted after every step towards
        ``target_acceptance`` (adaptive SMC samplers; the weights stay valid because each move leaves its
        level invariant given h).
    generator
        Source of the MALA randomness.
    project
        Optional projection of the MALA noise and moves (``space.centre`` for particles).
    target_acceptance
        MALA acceptance aimed at.
    replicas
        Independent walks R ≥ 1 from each sample, pooled into its log-weight as ln mean_r exp w_r.
    progress
        Show a progress bar over the levels.

    Returns
    -------
    AnnealingResult
    """
    if n_levels < 1 or mcmc_steps < 0 or not step_size > 0 or replicas < 1:
        raise ValueError(f"need n_levels >= 1, mcmc_steps >= 0, step_size > 0 and replicas >= 1, got {n_levels}, "
                         f"{mcmc_steps}, {step_size}, {replicas}")
    n_samples = x.shape[0]
    x = x.repeat_interleave(replicas, 0)
    betas = torch.linspace(0.0, 1.0, n_levels + 1, dtype=torch.float64)
    log_w = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    difference = _difference(log_a, log_b, x)
    acceptance = []
    for j in tqdm(range(n_levels), desc="annealing", disable=not progress, leave=False):
        log_w = log_w + float(betas[j + 1] - betas[j]) * difference
        if mcmc_steps == 0:  # the samples stay put, and so does the difference
            acceptance.append(float("nan"))
            continue
        x, rate, step_size = _mala_moves(log_a, log_b, float(betas[j + 1]), x, mcmc_steps, step_size, generator,
                                         project, target_acceptance)
        acceptance.append(rate)
        if j + 1 < n_levels:
            difference = _difference(log_a, log_b, x)
    walks = log_w.view(n_samples, replicas)
    pooled = torch.logsumexp(walks, 1) - math.log(replicas)
    return AnnealingResult(pooled, walks, torch.tensor(acceptance, dtype=torch.float64), step_size)


def _difference(log_a: LogDensity, log_b: LogDensity, x: torch.Tensor) -> torch.Tensor:
    """log π̃_b(x) − log π̃_a(x), ``(N,)`` float64."""
    with torch.no_grad():
        return (log_b(x) - log_a(x)).to(torch.float64)


def _mala_moves(log_a: LogDensity, log_b: LogDensity, beta: float, x: torch.Tensor, steps: int, step_size: float,
                generator: torch.Generator, project, target_acceptance: float) -> tuple[torch.Tensor, float, float]:
    """``steps`` MALA moves leaving π̃_β invariant; returns x, the mean acceptance and the adapted step."""
    def log_density(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            mixed = (1.0 - beta) * log_a(y) + beta * log_b(y)
            (grad,) = torch.autograd.grad(mixed.sum(), y)
        return mixed.detach().to(torch.float64), grad.detach()

    logp, grad = log_density(x)
    x, _, _, rate, step_size = adaptive_mala_moves(log_density, x, logp, grad, steps, step_size, generator, project,
                                                   target_acceptance)
    return x, rate, step_size
