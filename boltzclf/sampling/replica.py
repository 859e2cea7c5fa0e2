"""Replica exchange over the levels of a diffusion path (METHOD.md §7.2, §7.4).

Every level k = 0 … L−1 of a path (:class:`~boltzclf.sampling.paths.LearnedPath`) is a replica with its
own density π̃_k; W walkers per level live in one tensor ``x`` ``(L, W, *event)``. Column w is an
independent replica-exchange system of L chains: its walker at level i only ever swaps with the
walker of the same column at level i+1. Level 0 may hold the true Boltzmann density (the path's
``final_target``); the interior levels hold the learned p̃_θ(t_k, ·), so the learned energies only
decide the efficiency, never the stationary distribution at level 0.

One step (:func:`replica_step`):

1. a MALA move (:func:`~boltzclf.sampling.mcmc.mala_step`) at every level, with one step size per
   level, adapted during warm-up only (h ← h·exp(rate·(acceptance − target)), target 0.574);
2. every ``swap_every``-th step, a swap phase over disjoint neighbouring pairs, alternating between
   the even pairs (0-1, 2-3, …) and the odd pairs (1-2, 3-4, …).

Swap proposal for a pair (i, j = i+1), with M_i the path's reverse kernel (t_j → t_i, it uses the
cached score at (t_j, x_j)) and L_i its forward kernel (t_i → t_j):

    y_i ~ M_i(· | x_j),   y_j ~ L_i(· | x_i),
    log α = [π̃_i(y_i) + π̃_j(y_j)] − [π̃_i(x_i) + π̃_j(x_j)]
            + log M_i(x_i | y_j) − log M_i(y_i | x_j) + log L_i(x_j | y_i) − log L_i(y_j | x_i),

accepted elementwise with probability min(1, e^{log α}); the cached log-densities and scores move with
the states. Per-level normalisers cancel (each level appears once above and once below the line), so
neither the learned free energies nor Z_0 are needed. For Gaussian data and the exact ``ddpm`` kernel,
p_i(x) L_i(x'|x) = p_j(x') M_i(x|x') and log α = 0 exactly (tested).

Ladder: replicas are *consecutive* path levels, so every swap uses a single kernel step and the
kernel terms above are the closed-form densities of the one-step Gaussians actually drawn. A
proposal spanning several kernel steps would make K(x_i | y_j) a path density (correct only with the
intermediate states as auxiliary variables on an extended space); that is deliberately not offered.
For a coarser ladder, build the path and its kernels on a coarser grid, e.g.
``LearnedPath(model, final_target=target, times=log_snr_grid(process, t0, t1, L))`` or
``times=ladder_times(model.levels, m)`` (every m-th level, keeping level 0 and the top). The energy is
evaluated at any t, so the ladder need not be the training grid; fewer levels make each kernel step
longer and the swap acceptance lower.

Diagnostics: swap acceptance per pair, MALA acceptance and step size per level, model and target
evaluations (the path's counters), and round trips. Each walker carries a label that moves with it
when a swap is accepted; a round trip is completed when a label that has visited the top level
(L−1), then the bottom level (0), returns to the top. Walkers that start at the top count from there.
Samples are read at level 0 after warm-up: ``(n_kept, W, *event)``, W independent chains.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from boltzclf.sampling.mcmc import adapt_step_size, mala_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaSettings:
    """Replica-exchange options.

    n_walkers: W walkers per level (independent columns). n_steps: production steps. warmup: steps
    before production, with step-size adaptation (and no samples kept). swap_every: a swap phase after
    every m-th step (0: never, local moves only). step_size: initial MALA step h [units of x²], one
    float for all levels or one per level. target_acceptance: MALA acceptance aimed at during warm-up.
    adapt_rate: multiplicative adaptation rate per step. keep_every: keep level-0 samples every n-th
    production step.
    """

    n_walkers: int = 64
    n_steps: int = 1000
    warmup: int = 200
    swap_every: int = 1
    step_size: float | Sequence[float] = 1e-2
    target_acceptance: float = 0.574
    adapt_rate: float = 0.1
    keep_every: int = 1

    def __post_init__(self):
        if self.n_walkers < 1 or self.n_steps < 1 or self.warmup < 0:
            raise ValueError("n_walkers and n_steps must be >= 1 and warmup >= 0")
        if self.swap_every < 0 or self.keep_every < 1:
            raise ValueError("swap_every must be >= 0 and keep_every >= 1")
        sizes = [self.step_size] if isinstance(self.step_size, (int, float)) else list(self.step_size)
        if not sizes or any(not s > 0 for s in sizes):
            raise ValueError(f"MALA step sizes must be positive, got {self.step_size}")
        if not 0.0 < self.target_acceptance < 1.0 or self.adapt_rate < 0:
            raise ValueError("target_acceptance must be in (0, 1) and adapt_rate >= 0")


@dataclass
class ReplicaState:
    """The walkers of all levels.

    Attributes
    ----------
    x : (L, W, *event) positions; level k holds walkers of π̃_k.
    logp : (L, W) float64, log π̃_k at ``x[k]``.
    score : (L, W, *event) ∇ log π̃_k at ``x[k]`` (the reverse kernels start from it).
    step_size : (L,) float64 MALA step sizes.
    labels : (L, W) long, label (0 … L−1) of the walker at each (level, column); labels follow swaps.
    trip_phase : (L, W) int8 per (label, column): 0 top not reached yet, 1 top visited (heading down),
        2 bottom visited after the top (heading up).
    round_trips : (L, W) long, completed top → bottom → top trips per (label, column).
    n_steps : steps taken. n_swap_phases : swap phases done (their parity picks the pairs).
    """

    x: torch.Tensor
    logp: torch.Tensor
    score: torch.Tensor
    step_size: torch.Tensor
    labels: torch.Tensor
    trip_phase: torch.Tensor
    round_trips: torch.Tensor
    n_steps: int = 0
    n_swap_phases: int = 0

    @property
    def n_levels(self) -> int:
        return self.x.shape[0]


@dataclass
class ReplicaStepInfo:
    """What one step did: ``mala_accepted`` (L, W) bool; ``swap_attempted`` (L−1,) bool per pair;
    ``swap_accepted`` (L−1, W) bool (False where not attempted); ``swap_log_ratio`` (L−1, W) float64
    (NaN where not attempted); ``n_nonfinite`` proposals rejected for non-finite values."""

    mala_accepted: torch.Tensor
    swap_attempted: torch.Tensor
    swap_accepted: torch.Tensor
    swap_log_ratio: torch.Tensor
    n_nonfinite: int


@dataclass
class SwapProposal:
    """A swap proposal for the pair (i, i+1): new states ``x_lo`` (level i) and ``x_hi`` (level i+1)
    with their log-densities ``(W,)`` float64 and scores, and ``log_ratio`` ``(W,)`` float64 (−inf where
    a proposal is not finite); ``nonfinite`` ``(W,)`` bool."""

    x_lo: torch.Tensor
    logp_lo: torch.Tensor
    score_lo: torch.Tensor
    x_hi: torch.Tensor
    logp_hi: torch.Tensor
    score_hi: torch.Tensor
    log_ratio: torch.Tensor
    nonfinite: torch.Tensor


@dataclass
class ReplicaResult:
    """Level-0 chains and diagnostics of :func:`replica_exchange` (production phase unless stated).

    Attributes
    ----------
    samples : (n_kept, W, *event) level-0 states; ``samples[:, w]`` is the chain of column w.
    log_prob : (n_kept, W) float64, log π̃_0 of the samples.
    swap_acceptance : (L−1,) mean acceptance per neighbouring pair (NaN if never attempted).
    swap_attempts : (L−1,) number of attempted walker swaps per pair.
    mala_acceptance : (L,) mean MALA acceptance per level.
    step_sizes : (L,) final MALA step sizes (fixed during production).
    round_trips : completed top → bottom → top trips during production, all L·W walkers (labels).
    round_trips_per_walker : round_trips / (L·W).
    times : (L,) ladder times.
    n_model_evals, n_target_evals : samples evaluated by the learned model / the true target during the
        whole call (initialisation and warm-up included).
    n_nonfinite : proposals rejected for non-finite values (whole call).
    wall_s : seconds.
    state : the final :class:`ReplicaState` (to continue the run).
    """

    samples: torch.Tensor
    log_prob: torch.Tensor
    swap_acceptance: torch.Tensor
    swap_attempts: torch.Tensor
    mala_acceptance: torch.Tensor
    step_sizes: torch.Tensor
    round_trips: int
    round_trips_per_walker: float
    times: torch.Tensor
    n_model_evals: int
    n_target_evals: int
    n_nonfinite: int
    wall_s: float
    state: ReplicaState
    extra: dict = field(default_factory=dict)


def ladder_times(times: torch.Tensor, every: int) -> torch.Tensor:
    """Every ``every``-th time of an ascending grid ``(K,)``, always keeping the first and the last.

    Build the path and its kernels on the result (``LearnedPath(model, final_target, times=...)``): the
    replicas are then consecutive levels of a coarser path, and each swap is a single kernel step.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    index = list(range(0, len(times), every))
    if index[-1] != len(times) - 1:
        index.append(len(times) - 1)
    return times[index]


# ----- kernels -------------------------------------------------------------------------------------
def _hessian(path, kernels, k: int, x: torch.Tensor) -> torch.Tensor | None:
    return path.hessian(k, x) if getattr(kernels, "needs_hessian", False) else None


def _finite(x: torch.Tensor, logp: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(x).flatten(1).all(1) & torch.isfinite(logp) & torch.isfinite(score).flatten(1).all(1)


def propose_swap(path, kernels, i: int, x_lo: torch.Tensor, logp_lo: torch.Tensor, score_lo: torch.Tensor,
                 x_hi: torch.Tensor, logp_hi: torch.Tensor, score_hi: torch.Tensor,
                 generator: torch.Generator) -> SwapProposal:
    """Propose swapping the walkers of levels i and i+1 and return the Metropolis–Hastings log-ratio.

    Parameters
    ----------
    path, kernels
        The path (``log_density``, ``hessian``) and its kernels on the same levels.
    i
        Lower level of the pair, 0 ≤ i < L−1 (kernel index).
    x_lo, logp_lo, score_lo
        Walkers ``(W, *event)`` at level i, their log π̃_i ``(W,)`` and scores.
    x_hi, logp_hi, score_hi
        The same at level i+1.
    generator
        Draws y_i ~ M_i(·|x_{i+1}) first, then y_{i+1} ~ L_i(·|x_i).

    Returns
    -------
    SwapProposal
        The proposed states with their log-densities and scores, and the log-ratio to accept with.
    """
    y_lo, log_m_fwd = kernels.reverse(i, x_hi, score_hi, generator, _hessian(path, kernels, i + 1, x_hi))
    y_hi = kernels.forward(i, x_lo, generator, score_lo)
    log_l_fwd = kernels.forward_log_prob(i, x_lo, y_hi, score_lo)
    logp_ylo, score_ylo = path.log_density(i, y_lo)
    logp_yhi, score_yhi = path.log_density(i + 1, y_hi)
    log_m_rev = kernels.reverse_log_prob(i, x_lo, y_hi, score_yhi, _hessian(path, kernels, i + 1, y_hi))
    log_l_rev = kernels.forward_log_prob(i, y_lo, x_hi, score_ylo)
    log_ratio = ((logp_ylo + logp_yhi - logp_lo.to(torch.float64) - logp_hi.to(torch.float64))
                 + (log_m_rev - log_m_fwd) + (log_l_rev - log_l_fwd))
    nonfinite = ~(_finite(y_lo, logp_ylo, score_ylo) & _finite(y_hi, logp_yhi, score_yhi))
    log_ratio = torch.where(nonfinite | torch.isnan(log_ratio), torch.full_like(log_ratio, -math.inf), log_ratio)
    return SwapProposal(y_lo, logp_ylo, score_ylo, y_hi, logp_yhi, score_yhi, log_ratio, nonfinite)


# ----- state -----------------------------------------------------------------------------------------
def init_replica_state(path, kernels, settings: ReplicaSettings, generator: torch.Generator,
                       x0: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
                       device: torch.device | str = "cpu") -> ReplicaState:
    """Initial state: ``x0`` ``(L, W, *event)`` if given, else one ancestral sweep from the top.

    The sweep draws W walkers from the path's start distribution at level L−1 and applies the reverse
    kernels down to level 0, keeping every level's state (approximately distributed as π_k).
    """
    n_levels, walkers = path.n_levels, settings.n_walkers
    sizes = torch.as_tensor(settings.step_size, dtype=torch.float64).flatten()
    if sizes.numel() not in (1, n_levels):
        raise ValueError(f"step_size has {sizes.numel()} entries, expected 1 or the number of levels {n_levels}")
    step_size = sizes.expand(n_levels).clone() if sizes.numel() == 1 else sizes.clone()
    if x0 is not None:
        expected = (n_levels, walkers) + tuple(path.space.event_shape)
        if tuple(x0.shape) != expected:
            raise ValueError(f"x0 has shape {tuple(x0.shape)}, expected (levels, walkers, *event) = {expected}")
        if not bool(torch.isfinite(x0).all()):
            raise ValueError("x0 contains non-finite coordinates")
        levels = [x0[k].to(device=device, dtype=dtype) for k in range(n_levels)]
        evaluated = [path.log_density(k, levels[k]) for k in range(n_levels)]
    else:
        x, _ = path.initial(walkers, generator, dtype, device)
        evaluated = [path.log_density(n_levels - 1, x)]
        levels = [x]
        for k in range(n_levels - 2, -1, -1):
            x, _ = kernels.reverse(k, x, evaluated[-1][1], generator, _hessian(path, kernels, k + 1, x))
            levels.append(x)
            evaluated.append(path.log_density(k, x))
        levels.reverse()
        evaluated.reverse()
    x = torch.stack(levels)
    logp = torch.stack([e[0].to(torch.float64) for e in evaluated])
    score = torch.stack([e[1].to(x.dtype) for e in evaluated])
    labels = torch.arange(n_levels, device=x.device)[:, None].expand(n_levels, walkers).clone()
    trip_phase = torch.zeros(n_levels, walkers, dtype=torch.int8, device=x.device)
    trip_phase[n_levels - 1] = 1  # the walkers that start at the top have visited it
    round_trips = torch.zeros(n_levels, walkers, dtype=torch.long, device=x.device)
    return ReplicaState(x, logp, score, step_size.to(x.device), labels, trip_phase, round_trips)


def update_round_trips(labels: torch.Tensor, trip_phase: torch.Tensor, round_trips: torch.Tensor) -> None:
    """In place: the label at the top completes a trip if it came from the bottom; the label at the
    bottom turns round if it came from the top."""
    columns = torch.arange(labels.shape[1], device=labels.device)
    top = labels[-1]
    phase = trip_phase[top, columns]
    round_trips[top, columns] += (phase == 2).long()
    trip_phase[top, columns] = 1
    bottom = labels[0]
    phase = trip_phase[bottom, columns]
    trip_phase[bottom, columns] = torch.where(phase == 1, torch.full_like(phase, 2), phase)


# ----- step --------------------------------------------------------------------------------------------
def replica_step(path, kernels, state: ReplicaState, settings: ReplicaSettings, generator: torch.Generator,
                 adapt: bool = False) -> tuple[ReplicaState, ReplicaStepInfo]:
    """One MALA move at every level, then (every ``swap_every``-th step) a swap phase.

    ``adapt=True`` (warm-up only) adapts each level's step size to its mean acceptance of this move.
    Returns the new state (the input is not modified) and a :class:`ReplicaStepInfo`.
    """
    n_levels, walkers = state.x.shape[:2]
    x, logp, score = state.x.clone(), state.logp.clone(), state.score.clone()
    step_size = state.step_size.clone()
    mala_accepted = torch.zeros(n_levels, walkers, dtype=torch.bool, device=x.device)
    n_nonfinite = 0
    for k in range(n_levels):
        def log_density(y, k=k):
            return path.log_density(k, y)

        move = mala_step(log_density, x[k], logp[k], score[k], float(step_size[k]), generator,
                         project=path.space.centre)
        x[k], logp[k], score[k] = move.x, move.logp.to(torch.float64), move.grad
        mala_accepted[k] = move.accepted
        n_nonfinite += int(move.nonfinite.sum())
        if adapt:
            step_size[k] = adapt_step_size(float(step_size[k]), move.accepted, settings.target_acceptance,
                                           settings.adapt_rate)
    n_steps = state.n_steps + 1
    attempted = torch.zeros(n_levels - 1, dtype=torch.bool)
    accepted = torch.zeros(n_levels - 1, walkers, dtype=torch.bool, device=x.device)
    log_ratio = torch.full((n_levels - 1, walkers), math.nan, dtype=torch.float64, device=x.device)
    labels, trip_phase, round_trips = state.labels.clone(), state.trip_phase.clone(), state.round_trips.clone()
    n_swap_phases = state.n_swap_phases
    if settings.swap_every and n_steps % settings.swap_every == 0:
        for i in range(n_swap_phases % 2, n_levels - 1, 2):
            proposal = propose_swap(path, kernels, i, x[i], logp[i], score[i], x[i + 1], logp[i + 1],
                                    score[i + 1], generator)
            uniform = torch.rand(walkers, generator=generator, dtype=torch.float64, device=x.device)
            accept = torch.log(uniform) < proposal.log_ratio
            keep = accept.reshape((-1,) + (1,) * (x.dim() - 2))
            x[i] = torch.where(keep, proposal.x_lo, x[i])
            x[i + 1] = torch.where(keep, proposal.x_hi, x[i + 1])
            score[i] = torch.where(keep, proposal.score_lo.to(x.dtype), score[i])
            score[i + 1] = torch.where(keep, proposal.score_hi.to(x.dtype), score[i + 1])
            logp[i] = torch.where(accept, proposal.logp_lo, logp[i])
            logp[i + 1] = torch.where(accept, proposal.logp_hi, logp[i + 1])
            labels[i], labels[i + 1] = (torch.where(accept, labels[i + 1], labels[i]),
                                        torch.where(accept, labels[i], labels[i + 1]))
            attempted[i] = True
            accepted[i] = accept
            log_ratio[i] = proposal.log_ratio
            n_nonfinite += int(proposal.nonfinite.sum())
        n_swap_phases += 1
        update_round_trips(labels, trip_phase, round_trips)
    new_state = ReplicaState(x, logp, score, step_size, labels, trip_phase, round_trips, n_steps, n_swap_phases)
    return new_state, ReplicaStepInfo(mala_accepted, attempted, accepted, log_ratio, n_nonfinite)


# ----- run -----------------------------------------------------------------------------------------------
def replica_exchange(path, kernels, settings: ReplicaSettings, generator: torch.Generator,
                     x0: torch.Tensor | None = None, state: ReplicaState | None = None,
                     dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                     progress: bool = False) -> ReplicaResult:
    """Run replica exchange over the path's levels and return the level-0 chains.

    Parameters
    ----------
    path
        A path with ``log_density(k, x)``, ``n_levels``, ``times``, ``initial``, ``space`` and the
        evaluation counters (:class:`~boltzclf.sampling.paths.LearnedPath`; set ``final_target`` to
        put the true density at level 0, and ``times`` for the ladder).
    kernels
        Forward/reverse kernels on the same times (:mod:`boltzclf.sampling.kernels`).
    settings
        :class:`ReplicaSettings`.
    generator
        The only source of randomness.
    x0
        Optional initial positions ``(L, W, *event)`` (default: one ancestral sweep from the top).
    state
        Optional :class:`ReplicaState` to continue from (overrides ``x0``; its step sizes are kept).
    dtype, device
        Of the walkers (log-densities are float64).
    """
    started = time.perf_counter()
    if len(kernels.times) != path.n_levels or not torch.allclose(kernels.times, path.times.to(kernels.times.dtype)):
        raise ValueError("kernels and path must be built on the same times")
    model_evals, target_evals = path.n_model_evals, path.n_target_evals
    if state is None:
        state = init_replica_state(path, kernels, settings, generator, x0, dtype, device)
    elif tuple(state.x.shape[:2]) != (path.n_levels, settings.n_walkers):
        raise ValueError(f"state holds {tuple(state.x.shape[:2])} (levels, walkers), expected "
                         f"({path.n_levels}, {settings.n_walkers})")
    n_levels = path.n_levels
    swap_accepted = torch.zeros(n_levels - 1, dtype=torch.float64)
    swap_attempts = torch.zeros(n_levels - 1, dtype=torch.long)
    mala_accepted = torch.zeros(n_levels, dtype=torch.float64)
    samples, log_probs = [], []
    n_nonfinite = 0
    trips_before = None
    total = settings.warmup + settings.n_steps
    for step in tqdm(range(total), desc="replica exchange", disable=not progress, leave=False):
        production = step >= settings.warmup
        if production and trips_before is None:
            trips_before = int(state.round_trips.sum())
        state, info = replica_step(path, kernels, state, settings, generator, adapt=not production)
        n_nonfinite += info.n_nonfinite
        if not production:
            continue
        mala_accepted += info.mala_accepted.double().sum(1).cpu()
        swap_accepted += info.swap_accepted.double().sum(1).cpu()
        swap_attempts += info.swap_attempted.long() * settings.n_walkers
        if (step - settings.warmup) % settings.keep_every == 0:
            samples.append(state.x[0].clone())
            log_probs.append(state.logp[0].clone())
    if n_nonfinite:
        log.warning("replica exchange: %d proposals rejected for non-finite positions, densities or scores",
                    n_nonfinite)
    round_trips = int(state.round_trips.sum()) - trips_before
    swap_acceptance = torch.where(swap_attempts > 0, swap_accepted / swap_attempts.clamp_min(1).double(),
                                  torch.full_like(swap_accepted, math.nan))
    return ReplicaResult(
        samples=torch.stack(samples), log_prob=torch.stack(log_probs),
        swap_acceptance=swap_acceptance, swap_attempts=swap_attempts,
        mala_acceptance=mala_accepted / (settings.n_steps * settings.n_walkers),
        step_sizes=state.step_size.clone().cpu(), round_trips=round_trips,
        round_trips_per_walker=round_trips / (n_levels * settings.n_walkers), times=path.times.clone(),
        n_model_evals=path.n_model_evals - model_evals, n_target_evals=path.n_target_evals - target_evals,
        n_nonfinite=n_nonfinite, wall_s=time.perf_counter() - started, state=state)
