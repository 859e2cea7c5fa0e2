"""Importance sampling on log-weights: normalised weights, log-normaliser with error bar, diagnostics.

Conventions. A sample ``x_i`` drawn from a proposal ``q`` carries the log-weight
``log w_i = log p̃(x_i) − log q(x_i)`` (natural log, dimensionless; with reduced energies in kT this is
``−u_target(x_i) + u_proposal(x_i)`` up to the proposal's own normaliser), where ``p̃`` is the
unnormalised target. Log-weights are ``(..., N)``: the last axis runs over samples, any leading axes are
independent batches (replicates, levels) and are carried through. Everything is computed in float64 from
log-weights, so any additive constant and log-weights of size 1e5 are harmless; ``−inf`` marks a sample
with zero weight. Inputs are torch tensors or numpy arrays; outputs are float64 tensors on the input's
device.

Self-normalised observables (weighted means, clustered error bars for resampled particles, mode
fractions) are in :mod:`boltzclf.estimators.weighted`.
"""
from __future__ import annotations

import math
from typing import TypedDict, Union

import numpy as np
import torch

from boltzclf.estimators.estimate import Estimate, EstimatorInputError

ArrayLike = Union[torch.Tensor, np.ndarray]

__all__ = ["Estimate", "EstimatorInputError", "ImportanceSummary", "effective_sample_size",
           "largest_weight_share", "log_normaliser", "normalised_weights", "summarise"]


def effective_sample_size(log_weights: ArrayLike) -> torch.Tensor:
    """Kish effective sample size divided by N: exp(2 LSE(log w) − LSE(2 log w)) / N, in [1/N, 1].

    ``(Σ w)² / (N Σ w²)`` (Kish, "Survey Sampling", 1965), the ESS/N reported for Boltzmann generators.
    ``log_weights`` is ``(..., N)`` (tensor or numpy array, natural log); returns ``(...)`` float64.
    Invariant to adding a constant to log w.
    """
    lw = as_float64(log_weights, "log_weights")
    n = lw.shape[-1]
    return torch.exp(2.0 * torch.logsumexp(lw, -1) - torch.logsumexp(2.0 * lw, -1)) / n


def as_float64(x: ArrayLike, name: str) -> torch.Tensor:
    """``x`` as a float64 tensor (helper shared by the estimators).

    Parameters
    ----------
    x
        Tensor (device kept), numpy array or nested list of real numbers, any shape and unit.
    name
        Argument name used in the error message.

    Returns
    -------
    torch.Tensor
        Same shape and unit as ``x``, float64.

    Raises
    ------
    ValueError
        If ``x`` is not numeric, or is boolean or complex.
    """
    try:
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as err:
        raise EstimatorInputError(f"{name}: not convertible to a numeric array ({err})") from None
    if t.dtype == torch.bool or t.is_complex():
        raise EstimatorInputError(f"{name}: expected real numbers, got dtype {t.dtype}")
    return t.to(torch.float64)


def check_log_weights(log_w: ArrayLike, name: str = "log_w") -> torch.Tensor:
    """Validate log-weights and return them as float64 (helper shared by the estimators).

    Parameters
    ----------
    log_w
        ``(..., N)`` log-weights (natural log, dimensionless).
    name
        Argument name used in the error message.

    Returns
    -------
    torch.Tensor
        ``(..., N)`` float64.

    Raises
    ------
    ValueError
        (:class:`EstimatorInputError`) for a 0-d input, N = 0, any NaN or ``+inf`` entry, or a batch
        whose log-weights are all ``−inf`` (no sample has positive weight).
    """
    lw = as_float64(log_w, name)
    if lw.dim() == 0 or lw.shape[-1] == 0:
        raise EstimatorInputError(f"{name}: expected shape (..., N) with N >= 1, got {tuple(lw.shape)}")
    bad = torch.isnan(lw) | (lw == math.inf)
    if bad.any():
        where = torch.nonzero(bad)[:5].tolist()
        raise EstimatorInputError(f"{name}: {int(bad.sum())} NaN or +inf entries (first at indices {where}); "
                                  "a log-weight must be finite or −inf")
    dead = (lw == -math.inf).all(-1)
    if dead.any():
        where = f" in {int(dead.sum())} batch(es), first {torch.nonzero(dead)[:5].tolist()}" if dead.dim() else ""
        raise EstimatorInputError(f"{name}: all {lw.shape[-1]} log-weights are −inf (zero total weight){where}")
    return lw


def normalised_weights(log_w: ArrayLike) -> torch.Tensor:
    """Self-normalised importance weights ``W_i = w_i / Σ_j w_j`` (a softmax over the last axis).

    Parameters
    ----------
    log_w
        ``(..., N)`` log-weights (natural log, dimensionless, any additive constant). ``−inf`` entries
        get weight exactly 0.

    Returns
    -------
    torch.Tensor
        ``(..., N)`` float64, non-negative, summing to 1 over the last axis.

    Raises
    ------
    ValueError
        If any entry is NaN or ``+inf``, if all entries of a batch are ``−inf``, or if N = 0.
    """
    return torch.softmax(check_log_weights(log_w), dim=-1)


def log_normaliser(log_w: ArrayLike) -> Estimate:
    """Importance-sampling estimate of ``log Z`` with a delta-method standard error.

    ``Ẑ = (1/N) Σ_i w_i`` is unbiased for ``Z = ∫ p̃`` when the samples come from the normalised
    proposal that ``log w`` divides by; ``log Ẑ = LSE(log w) − log N`` (biased low by ≈ se²/2).

    Standard error: with the unbiased sample variance ``s² = Σ_i (w_i − w̄)² / (N − 1)``,
    ``Var(Ẑ) ≈ s²/N`` and, by the delta method, ``se(log Ẑ)² = s² / (N w̄²)``. Dividing through by
    ``w̄²`` turns this into a function of the normalised weights only, which is exact in floating point
    for any scale of the log-weights::

        se² = (mean(w²)/mean(w)² − 1) / (N − 1) = (N Σ_i W_i² − 1) / (N − 1) = (N/ESS − 1) / (N − 1)

    with ``ESS = 1/Σ W_i²`` the Kish effective sample size; it is evaluated as
    ``N Σ_i (W_i − 1/N)² / (N − 1)``, the same number without cancellation (exactly 0 for equal
    weights). The error bar is only as good as the weight distribution is sampled: when ESS is a
    handful, or one weight dominates (see :func:`largest_weight_share`), it is typically too small.

    Parameters
    ----------
    log_w
        ``(..., N)`` log-weights ``log p̃(x_i) − log q(x_i)`` with ``x_i ~ q``, q normalised (natural
        log, dimensionless).

    Returns
    -------
    Estimate
        ``value``: ``(...)`` log Ẑ (natural log, dimensionless; −log Ẑ is a free energy in kT);
        ``se``: ``(...)`` its standard error (NaN when N = 1); ``n_eff``: ``(...)`` Kish ESS (a count).

    Raises
    ------
    ValueError
        As :func:`normalised_weights`.
    """
    lw = check_log_weights(log_w)
    n = lw.shape[-1]
    value = torch.logsumexp(lw, -1) - math.log(n)
    w = torch.softmax(lw, -1)
    sum_w2 = w.square().sum(-1)
    if n > 1:  # N ΣW² − 1 = N Σ(W − 1/N)², the right side without cancellation for near-equal weights
        se = (n * (w - 1.0 / n).square().sum(-1) / (n - 1)).sqrt()
    else:
        se = torch.full_like(value, math.nan)
    return Estimate(value=value, se=se, n_eff=1.0 / sum_w2,
                    method="importance sampling log Z = LSE(log w) − log N; delta-method SE from the "
                           "unbiased weight variance; n_eff = Kish ESS")


def largest_weight_share(log_w: ArrayLike) -> torch.Tensor:
    """Largest normalised weight ``max_i W_i``, in ``[1/N, 1]``.

    Parameters
    ----------
    log_w
        ``(..., N)`` log-weights (natural log, dimensionless).

    Returns
    -------
    torch.Tensor
        ``(...)`` float64. Near 1 means one sample carries the estimate and standard errors from the
        weights are not to be trusted.
    """
    return normalised_weights(log_w).amax(-1)


class ImportanceSummary(TypedDict):
    """A plain, JSON-ready dict of importance-weight diagnostics (see :func:`summarise`)."""

    ess: float
    log_z: float
    log_z_se: float
    max_weight: float
    n: int


def summarise(log_w: ArrayLike) -> ImportanceSummary:
    """Diagnostics of one set of importance weights for JSON reports.

    Parameters
    ----------
    log_w
        ``(N,)`` log-weights (natural log, dimensionless).

    Returns
    -------
    ImportanceSummary
        A plain dict: ``ess`` Kish ESS / N in [1/N, 1]; ``log_z`` and ``log_z_se`` from
        :func:`log_normaliser` (dimensionless; NaN SE when N = 1); ``max_weight`` from
        :func:`largest_weight_share`; ``n`` = N.
    """
    lw = check_log_weights(log_w)
    if lw.dim() != 1:
        raise EstimatorInputError(f"log_w: summarise takes one set of weights, shape (N,), got {tuple(lw.shape)}")
    est = log_normaliser(lw)
    return ImportanceSummary(ess=float(effective_sample_size(lw)), log_z=float(est.value),
                             log_z_se=float(est.se), max_weight=float(largest_weight_share(lw)),
                             n=int(lw.shape[0]))
