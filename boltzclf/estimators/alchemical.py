"""Free-energy differences between thermodynamic states from sampled windows: MBAR, TI, BAR, EXP.

Arrays in, :class:`~boltzclf.estimators.estimate.Estimate` out, in kT. States are indexed k = 0 … K−1
(for a λ path: in increasing λ); every estimate here is **f_last − f_first**, the dimensionless free
energy of the last state minus that of the first (F = −ln Z). Callers that want the opposite sign
negate it and say so.

* :func:`decorrelate` — equilibration detection (Chodera, JCTC 12, 1799 (2016), via
  ``pymbar.timeseries.detect_equilibration``) and subsampling by the statistical inefficiency of many
  walkers' series at once.
* :func:`mbar` — pymbar's MBAR (Shirts & Chodera 2008) with its robust solver; the result says
  whether the self-consistent equations hold (their largest residual), and carries the overlap matrix.
* :func:`thermodynamic_integration` — trapezoid rule over ⟨∂u/∂λ⟩ with independent window errors.
* :func:`bar_chain` — Bennett acceptance ratio between neighbouring states, summed (errors in quadrature).
* :func:`exponential_averaging` — one-sided EXP (Zwanzig) from one state's samples.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from boltzclf.estimators.estimate import Estimate, EstimatorInputError

log = logging.getLogger(__name__)

#: Largest residual [kT] of the MBAR self-consistent equations for which the solution counts as converged.
MBAR_TOLERANCE = 1e-5
#: Neighbouring states whose two-state overlap falls below this overlap poorly (warned and reported).
POOR_OVERLAP = 0.03


def quiet_pymbar():
    """Import :mod:`pymbar` without the banner it prints on import."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import pymbar
        import pymbar.other_estimators  # noqa: F401
        import pymbar.timeseries  # noqa: F401
    return pymbar


def _estimate(value: float, se: float, n_eff: float, method: str) -> Estimate:
    as_tensor = lambda v: torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
    return Estimate(as_tensor(value), as_tensor(se), as_tensor(n_eff), method)


@dataclass(frozen=True)
class Decorrelation:
    """Attributes: ``t0`` first production frame after equilibration; ``g`` statistical inefficiency
    (frames); ``frames`` ``(F',)`` indices of the kept, roughly independent frames of every walker."""

    t0: int
    g: float
    frames: np.ndarray


def decorrelate(*series: np.ndarray) -> Decorrelation:
    """Equilibration cut and subsampling for walkers' time series of one or more observables, each
    ``(W, F)`` (W walkers, F frames).

    For each observable, the equilibration time is the median over walkers of each walker's detected
    start of production (the one maximising its effective number of samples after it; the
    walker-averaged series would hide a transient that every walker shares), and the statistical
    inefficiency g is that of all walkers' frames after it together
    (``pymbar.timeseries.statistical_inefficiency_multiple``; a constant series has g = 1). The cut
    t0 and g are the largest over the observables (e.g. ∂u/∂λ, constant at λ = 0 of some paths, and
    the reduced potential); every walker keeps the frames t0, t0 + ⌈g⌉, ….
    """
    if not series:
        raise EstimatorInputError("series: give at least one (walkers, frames) array")
    cuts = [_cut(np.asarray(s, dtype=np.float64)) for s in series]
    if len({c[2] for c in cuts}) != 1:
        raise EstimatorInputError(f"series: all observables need the same frames, got {[c[2] for c in cuts]}")
    t0, g = max(c[0] for c in cuts), max(c[1] for c in cuts)
    return Decorrelation(t0, g, np.arange(t0, cuts[0][2], max(1, math.ceil(g))))


def _cut(data: np.ndarray) -> tuple[int, float, int]:
    """(t0, g, frames) of one observable ``(W, F)``."""
    if data.ndim != 2 or data.shape[1] < 4 or not np.isfinite(data).all():
        raise EstimatorInputError(f"series: need finite (walkers, frames >= 4), got shape {data.shape}")
    timeseries = quiet_pymbar().timeseries
    starts = [timeseries.detect_equilibration(row)[0] if np.ptp(row) > 0 else 0 for row in data]
    t0 = int(min(np.median(starts), data.shape[1] - 2))
    production = [row[t0:] for row in data]
    g = 1.0 if np.ptp(data[:, t0:]) == 0 else float(timeseries.statistical_inefficiency_multiple(production))
    return t0, g, data.shape[1]


@dataclass(frozen=True)
class MBARResult:
    """Attributes: ``estimate`` f_last − f_first [kT]; ``f_k`` ``(K,)`` free energies (f_0 = 0) and
    ``df_k`` their standard errors relative to state 0; ``overlap`` ``(K, K)`` overlap matrix;
    ``neighbours`` ``(K−1,)`` two-state overlaps (:func:`neighbour_overlaps`); ``residual`` largest
    violation of the self-consistent equations [kT]; ``converged``; ``poor_overlap`` pairs (k, k+1)
    whose two-state overlap is below :data:`POOR_OVERLAP`."""

    estimate: Estimate
    f_k: np.ndarray
    df_k: np.ndarray
    overlap: np.ndarray
    neighbours: np.ndarray
    residual: float
    converged: bool
    poor_overlap: list[tuple[int, int]]


def mbar(u_kn: np.ndarray, counts: np.ndarray) -> MBARResult:
    """MBAR free energies of K states from pooled samples.

    Parameters
    ----------
    u_kn
        ``(K, N)`` reduced energy [kT] of every pooled sample n in every state k; the samples are
        ordered by the state they were drawn from (``counts[0]`` of state 0 first, …).
    counts
        ``(K,)`` number of (decorrelated) samples drawn from each state, summing to N.
    """
    u = np.asarray(u_kn, dtype=np.float64)
    n_k = np.asarray(counts, dtype=np.int64)
    if u.ndim != 2 or u.shape[0] != n_k.size or n_k.sum() != u.shape[1] or (n_k <= 0).any():
        raise EstimatorInputError(f"u_kn {u.shape}, counts {n_k.tolist()}: need (K, N) with N = sum(counts) "
                                  "and every state sampled")
    if not np.isfinite(u).all():
        raise EstimatorInputError(f"u_kn: {int((~np.isfinite(u)).sum())} non-finite reduced energies")
    result = quiet_pymbar().MBAR(u, n_k, solver_protocol="robust")
    diff = result.compute_free_energy_differences()
    f_k = np.asarray(diff["Delta_f"][0], dtype=np.float64)
    df_k = np.asarray(diff["dDelta_f"][0], dtype=np.float64)
    overlap = np.asarray(result.compute_overlap()["matrix"], dtype=np.float64)
    residual = _mbar_residual(u, n_k, f_k)
    neighbours = neighbour_overlaps(u, n_k, f_k)
    poor = [(k, k + 1) for k in range(len(n_k) - 1) if neighbours[k] < POOR_OVERLAP]
    for k, l in poor:
        log.warning("states %d and %d overlap poorly (two-state overlap %.3g < %g): add a window between them",
                    k, l, neighbours[k], POOR_OVERLAP)
    estimate = _estimate(f_k[-1], df_k[-1], n_k.sum(), "MBAR (pymbar, robust solver), asymptotic error")
    return MBARResult(estimate, f_k, df_k, overlap, neighbours, residual, residual < MBAR_TOLERANCE, poor)


def neighbour_overlaps(u: np.ndarray, n_k: np.ndarray, f_k: np.ndarray) -> np.ndarray:
    """``(K−1,)`` overlap of each neighbouring pair (k, k+1) on its own: the off-diagonal element of the
    MBAR overlap matrix O = Wᵀ W diag(N) of the two states and their samples alone (0.5 for identical
    states, 0 for disjoint ones). Unlike O[k, k+1] of all K states, it does not shrink as 1/K when many
    windows are nearly alike."""
    starts = np.concatenate([[0], np.cumsum(n_k)])
    out = np.empty(len(n_k) - 1)
    for k in range(len(n_k) - 1):
        cols = slice(starts[k], starts[k + 2])
        pair = u[k:k + 2, cols]
        log_terms = np.log(n_k[k:k + 2])[:, None] + f_k[k:k + 2, None] - pair
        log_w = f_k[k:k + 2, None] - pair - np.logaddexp.reduce(log_terms, axis=0)[None, :]
        out[k] = float(np.exp(log_w[0] + log_w[1]).sum() * n_k[k + 1])
    return out


def _mbar_residual(u: np.ndarray, n_k: np.ndarray, f_k: np.ndarray) -> float:
    """max_k |f_k − f̂_k| with f̂_k = −ln Σ_n exp(−u_k(n)) / Σ_l N_l exp(f_l − u_l(n)), both gauged to f_0 = 0."""
    log_denominator = np.logaddexp.reduce(np.log(n_k)[:, None] + f_k[:, None] - u, axis=0)
    f_hat = -np.logaddexp.reduce(-u - log_denominator[None, :], axis=1)
    return float(np.abs((f_hat - f_hat[0]) - (f_k - f_k[0])).max())


def thermodynamic_integration(lambdas: np.ndarray, mean: np.ndarray, se: np.ndarray,
                              n_samples: int) -> Estimate:
    """f(λ_last) − f(λ_first) = ∫⟨∂u/∂λ⟩_λ dλ by the trapezoid rule.

    Parameters
    ----------
    lambdas
        ``(K,)`` increasing λ.
    mean, se
        ``(K,)`` ⟨∂u/∂λ⟩ [kT] in each window and its standard error (windows independent).
    n_samples
        Decorrelated samples used (reported as ``n_eff``).
    """
    lam, mu, err = (np.asarray(a, dtype=np.float64) for a in (lambdas, mean, se))
    if lam.ndim != 1 or lam.size < 2 or mu.shape != lam.shape or err.shape != lam.shape:
        raise EstimatorInputError(f"lambdas, mean, se: need equal (K >= 2,) shapes, got {lam.shape}, "
                                  f"{mu.shape}, {err.shape}")
    if not (np.diff(lam) > 0).all() or not np.isfinite(mu).all():
        raise EstimatorInputError("lambdas must increase and the window means must be finite")
    weights = np.zeros_like(lam)
    weights[:-1] += 0.5 * np.diff(lam)
    weights[1:] += 0.5 * np.diff(lam)
    return _estimate(weights @ mu, math.sqrt(float((weights**2) @ (err**2))), n_samples,
                     "TI, trapezoid rule over the windows; window errors from decorrelated samples")


def bar_chain(forward: list[np.ndarray], reverse: list[np.ndarray]) -> tuple[Estimate, np.ndarray, np.ndarray]:
    """Σ_k BAR(k → k+1): f_last − f_first from neighbouring-state work values.

    Parameters
    ----------
    forward
        K−1 arrays; ``forward[k]`` = u_{k+1}(x) − u_k(x) [kT] for samples x of state k.
    reverse
        K−1 arrays; ``reverse[k]`` = u_k(x) − u_{k+1}(x) [kT] for samples x of state k+1.

    Returns
    -------
    Estimate, and the ``(K−1,)`` steps f_{k+1} − f_k with their standard errors.
    """
    if len(forward) != len(reverse) or not forward:
        raise EstimatorInputError(f"forward, reverse: need the same number (>= 1) of neighbour pairs, got "
                                  f"{len(forward)} and {len(reverse)}")
    other = quiet_pymbar().other_estimators
    steps, errors = [], []
    for w_f, w_r in zip(forward, reverse):
        out = other.bar(np.asarray(w_f, np.float64), np.asarray(w_r, np.float64))
        steps.append(out["Delta_f"])
        errors.append(out["dDelta_f"])
    steps, errors = np.asarray(steps), np.asarray(errors)
    n = sum(len(w) for w in forward) + len(reverse[-1])
    estimate = _estimate(steps.sum(), math.sqrt(float((errors**2).sum())), n,
                         "BAR between neighbouring states, summed; errors in quadrature")
    return estimate, steps, errors


def exponential_averaging(work: np.ndarray) -> Estimate:
    """One-sided EXP: f_B − f_A = −ln⟨exp(−w)⟩_A with ``work`` ``(N,)`` = u_B(x) − u_A(x) [kT], x ~ A
    (decorrelated). Its error bar is pymbar's asymptotic one, which is optimistic when the overlap is poor."""
    w = np.asarray(work, dtype=np.float64).ravel()
    if w.size < 2 or not np.isfinite(w).all():
        raise EstimatorInputError(f"work: need >= 2 finite values, got {w.size}")
    out = quiet_pymbar().other_estimators.exp(w)
    log_w = -w - np.logaddexp.reduce(-w)
    return _estimate(out["Delta_f"], out["dDelta_f"], 1.0 / np.exp(2 * log_w).sum(),
                     "one-sided exponential averaging (Zwanzig), asymptotic error; n_eff = Kish ESS")
