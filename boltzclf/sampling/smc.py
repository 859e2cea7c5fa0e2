"""Sequential Monte Carlo along a level path (PDDS / Feynman–Kac; METHOD.md §7.1, §7.3).

Particles start at the top level from the path's start distribution q and move down one level at a
time with a reverse kernel M_k. With π̃_k the path's unnormalised densities and L_k the forward
kernel, the incremental log-weight of a move x_{k+1} → x_k is

    log π̃_k(x_k) − log π̃_{k+1}(x_{k+1}) + log L_k(x_{k+1} | x_k) − log M_k(x_k | x_{k+1}),

and the walk starts with log w = log π̃_{K−1}(x) − log q(x). The weighted particles at level 0 target
π_0 (the true Boltzmann density when the path's final target is set), and the running product of mean
weights estimates its normaliser Z_0 = ∫ π̃_0 (log Z = 0 for a normalised target).

* Resampling: systematic, within each group, when its ESS/n falls below ``resample_threshold`` (never
  in the last ``no_resample_last`` moves, so the final weights stay informative).
* Groups: the N particles form G independent SMC runs of n = N/G particles in one tensor. Each gives
  an unbiased Ẑ_g; log Ẑ = log mean_g Ẑ_g and its standard error comes from the spread of the Ẑ_g
  (delta method). Final weights combine groups as Ẑ_g · W_i^{(g)}, so the pooled weighted sample is
  what one run of N particles would give, with an honest error bar.
* Optional MALA moves after each level leave π_k invariant (weights unchanged); the step size
  adapts to ``target_acceptance`` from the acceptance of the population's previous moves.
* Diffusion AIS (scores only, no intermediate densities, no resampling) is :func:`diffusion_ais`: the
  same walk on a ``score_only`` path with resampling off, so its weights telescope to
  log π̃_0(x_0) − log q(x_{K−1}) + Σ_k [log L_k − log M_k].
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from boltzclf.estimators.importance import effective_sample_size
from boltzclf.sampling.mcmc import adaptive_mala_moves
from boltzclf.sampling.resampling import resample_groups


@dataclass(frozen=True)
class SMCSettings:
    """SMC options.

    n_particles: total particles N (a multiple of ``n_groups``). n_groups: independent runs G for the
    log Z error bar. resample_threshold: resample a group when its ESS/n falls below this (0: never).
    no_resample_last: no resampling in the last m moves. mcmc_steps: MALA moves per level (0: none).
    mcmc_last: MALA moves only in the last m moves (0: in every move; e.g. the levels of a
    :class:`~boltzclf.sampling.bridge.BridgedPath`). mcmc_step_size: initial MALA step h (units of
    x²). target_acceptance: MALA acceptance aimed at.
    """

    n_particles: int = 4096
    n_groups: int = 8
    resample_threshold: float = 0.3
    no_resample_last: int = 0
    mcmc_steps: int = 0
    mcmc_last: int = 0
    mcmc_step_size: float = 1e-3
    target_acceptance: float = 0.574

    def __post_init__(self):
        if self.n_groups < 1 or self.n_particles < 2 * self.n_groups or self.n_particles % self.n_groups:
            raise ValueError(f"n_particles ({self.n_particles}) must be a multiple of n_groups ({self.n_groups}) "
                             "with at least 2 particles per group")
        if not 0.0 <= self.resample_threshold <= 1.0:
            raise ValueError(f"resample_threshold must be in [0, 1], got {self.resample_threshold}")
        if self.no_resample_last < 0 or self.mcmc_steps < 0 or self.mcmc_last < 0:
            raise ValueError("no_resample_last, mcmc_steps and mcmc_last must be >= 0")
        if self.mcmc_step_size <= 0 or not 0.0 < self.target_acceptance < 1.0:
            raise ValueError("mcmc_step_size must be positive and target_acceptance in (0, 1)")


@dataclass
class SMCResult:
    """Weighted particles at level 0 and diagnostics.

    samples ``(N, *event)``; log_weights ``(N,)`` float64, normalised (logsumexp = 0) across all
    groups; ancestors ``(N,)``: index of the start particle each descends from (clusters for error
    bars of resampled particles); log_z, log_z_se: estimate of log Z_0 and its standard error;
    log_z_groups ``(G,)``; ess ``(K−1,)`` ESS/n (mean over groups) after each move, before resampling;
    resampled ``(K−1,)`` fraction of groups resampled after each move; acceptance ``(K−1,)`` mean MALA
    acceptance per level (NaN without moves); step_sizes ``(K−1,)``; n_model_evals / n_target_evals:
    samples evaluated by the learned energy and by the true target; n_nonfinite: moves whose weight
    came out NaN or +inf (a non-finite energy or kernel density), set to weight 0; wall_s.
    """

    samples: torch.Tensor
    log_weights: torch.Tensor
    ancestors: torch.Tensor
    log_z: float
    log_z_se: float
    log_z_groups: torch.Tensor
    ess: torch.Tensor
    resampled: torch.Tensor
    acceptance: torch.Tensor
    step_sizes: torch.Tensor
    n_model_evals: int
    n_target_evals: int
    n_nonfinite: int
    wall_s: float

    @property
    def ess_final(self) -> float:
        """Kish ESS/N of the final pooled weights."""
        return float(effective_sample_size(self.log_weights))


def smc(path, kernels, settings: SMCSettings, generator: torch.Generator, dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu", progress: bool = False) -> SMCResult:
    """Run SMC from the path's top level down to level 0.

    Parameters
    ----------
    path
        A path (:class:`~boltzclf.sampling.paths.LearnedPath` or a composition): ``initial``,
        ``log_density(k, x)``, ``n_levels``, ``space`` and evaluation counters.
    kernels
        Forward/reverse kernels on the same levels (:mod:`boltzclf.sampling.kernels`).
    settings
        :class:`SMCSettings`.
    generator
        The only source of randomness.
    dtype, device
        Of the particles; log-weights are float64.
    """
    started = time.perf_counter()
    n_moves = path.n_levels - 1
    groups, per_group = settings.n_groups, settings.n_particles // settings.n_groups
    x, log_q = path.initial(settings.n_particles, generator, dtype, device)
    logp, score = path.log_density(n_moves, x)
    log_w = logp - log_q
    log_z_groups = torch.zeros(groups, dtype=torch.float64, device=log_w.device)
    ancestors = torch.arange(settings.n_particles, device=log_w.device)
    trace = {"ess": [], "resampled": [], "acceptance": [], "step_sizes": []}
    step_size = settings.mcmc_step_size
    n_nonfinite = 0
    for k in tqdm(range(n_moves - 1, -1, -1), desc="smc", disable=not progress, leave=False):
        hessian = path.hessian(k + 1, x) if kernels.needs_hessian else None
        x_new, log_m = kernels.reverse(k, x, score, generator, hessian)
        logp_new, score_new = path.log_density(k, x_new)
        log_l = kernels.forward_log_prob(k, x_new, x, score_new)
        log_w = log_w + (logp_new - logp) + (log_l - log_m)
        broken = torch.isnan(log_w) | (log_w == math.inf)  # non-finite energies: weight 0, counted
        n_nonfinite += int(broken.sum())
        log_w = torch.where(broken, -math.inf, log_w)
        x, logp, score = x_new, logp_new, score_new
        grouped = log_w.reshape(groups, per_group)
        trace["ess"].append(float(torch.nan_to_num(effective_sample_size(grouped)).mean()))  # all weights 0: 0
        threshold = settings.resample_threshold if k >= settings.no_resample_last else 0.0
        indices, resampled = resample_groups(grouped, threshold, generator)
        trace["resampled"].append(float(resampled.double().mean()))
        if bool(resampled.any()):
            log_z_groups += torch.where(resampled, torch.logsumexp(grouped, 1) - math.log(per_group), 0.0)
            flat = (indices + per_group * torch.arange(groups, device=indices.device)[:, None]).reshape(-1)
            x, logp, score, ancestors = x[flat], logp[flat], score[flat], ancestors[flat]
            log_w = torch.where(resampled[:, None], 0.0, grouped).reshape(-1)
        if settings.mcmc_steps and (settings.mcmc_last == 0 or k < settings.mcmc_last):
            x, logp, score, rate, step_size = _mala_moves(path, k, x, logp, score, step_size, settings, generator)
            trace["acceptance"].append(rate)
        else:
            trace["acceptance"].append(float("nan"))
        trace["step_sizes"].append(step_size if not math.isnan(trace["acceptance"][-1]) else float("nan"))
    grouped = log_w.reshape(groups, per_group)
    log_z_groups += torch.logsumexp(grouped, 1) - math.log(per_group)
    log_z, log_z_se = pooled_log_z(log_z_groups)
    normalised = grouped - torch.logsumexp(grouped, 1, keepdim=True)  # NaN in a group whose weights are all 0
    pooled = torch.where(torch.isfinite(log_z_groups)[:, None], normalised + log_z_groups[:, None], -math.inf)
    pooled = pooled.reshape(-1)
    return SMCResult(
        samples=x, log_weights=pooled - torch.logsumexp(pooled, 0), ancestors=ancestors,
        log_z=log_z, log_z_se=log_z_se, log_z_groups=log_z_groups,
        ess=torch.tensor(trace["ess"]), resampled=torch.tensor(trace["resampled"]),
        acceptance=torch.tensor(trace["acceptance"]), step_sizes=torch.tensor(trace["step_sizes"]),
        n_model_evals=path.n_model_evals, n_target_evals=path.n_target_evals,
        n_nonfinite=n_nonfinite, wall_s=time.perf_counter() - started)


def diffusion_ais(path, kernels, n_particles: int, generator: torch.Generator, n_groups: int = 8,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                  progress: bool = False) -> SMCResult:
    """Diffusion AIS: the score-only baseline (needs ``path.score_only``; no resampling, no moves)."""
    if not getattr(path, "score_only", False):
        raise ValueError("diffusion AIS uses scores only: build the path with score_only=True")
    settings = SMCSettings(n_particles=n_particles, n_groups=n_groups, resample_threshold=0.0)
    return smc(path, kernels, settings, generator, dtype, device, progress)


def pooled_log_z(log_z_groups: torch.Tensor) -> tuple[float, float]:
    """log mean_g Ẑ_g and its delta-method standard error sd(Ẑ_g/Ẑ)/√G (NaN for one group)."""
    groups = log_z_groups.shape[0]
    log_z = torch.logsumexp(log_z_groups, 0) - math.log(groups)
    if groups < 2:
        return float(log_z), float("nan")
    relative = torch.exp(log_z_groups - log_z)
    return float(log_z), float(relative.std() / math.sqrt(groups))


def _mala_moves(path, k: int, x, logp, score, step_size: float, settings: SMCSettings, generator):
    """``settings.mcmc_steps`` MALA moves targeting π_k; returns the new state, the mean acceptance and
    the adapted step size."""
    return adaptive_mala_moves(lambda y: path.log_density(k, y), x, logp, score, settings.mcmc_steps, step_size,
                               generator, path.space.centre, settings.target_acceptance)
