"""Fractions and two-state free energies with error bars that hold for correlated, weighted or resampled frames.

Samples come as one time series ``(n_frames,)`` or as independent walkers ``(n_walkers, n_frames)``
(frames in time order along the last axis), optionally with log-weights of the same shape (e.g. to
reweight a biased or tempered ensemble) and optionally with integer cluster ids (e.g. the ancestor of
each resampled SMC particle). Every estimate is the self-normalised weighted mean of an indicator,
computed by :func:`boltzclf.estimators.weighted.weighted_fractions`; what changes with the data is which
samples are grouped into one independent *cluster* for its cluster-robust (sandwich) error bar
``se² = Σ_c (Σ_{i∈c} W_i (f_i − μ̂))²``:

* ``clusters`` given: those clusters (resampled particles: the ancestor index; already independent
  draws: ``arange(N)``).
* otherwise, batch means: each walker is cut into contiguous blocks of ``block_length`` frames, and each
  block of each walker is one cluster (blocks never span two walkers, so independent walkers are always
  separate clusters). With ``block_length=None`` the length is chosen from the data as
  ``ceil(block_factor · τ)``, where τ is the integrated autocorrelation time (in frames) of the
  influence series ``N W_i (f_i − μ̂)`` — the terms of the sandwich, equal to ``f_i − μ̂`` for equal
  weights — estimated by :func:`integrated_autocorrelation_time` and maximised over the observables.
  The variance of a block mean is underestimated by a relative ≈ τ/(2b) for block length b, and the
  sandwich by ≈ 1/(number of blocks); ``block_factor = 10`` keeps the first to ≈ 5 %. When τ is
  comparable to a walker's length, each walker becomes a single block, and the error bar rests on the
  number of walkers. ``block_length=1`` treats frames as independent.

References: the batch-means / blocking error (Flyvbjerg & Petersen, J. Chem. Phys. 91, 461 (1989));
the automatic-window integrated autocorrelation time (Sokal, "Monte Carlo Methods in Statistical
Mechanics", 1997 lecture notes, §3; as in emcee's ``integrated_time``); the sandwich error for weighted
and resampled samples: :mod:`boltzclf.estimators.weighted`.

The two-state free energy ``ΔF(A vs B) = F_A − F_B = −ln(P(A)/P(B))`` (kT) of a state A and its
complement B gets the delta-method error ``se(ΔF) = se(P_A) / (P_A (1 − P_A))``; it is ±∞ (with a NaN
error) when one state is empty, and the error bar is only meaningful when both states are visited many
times (many transitions per walker, or many walkers in each state).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from boltzclf.estimators.estimate import Estimate, EstimatorInputError
from boltzclf.estimators.importance import ArrayLike, as_float64, check_log_weights
from boltzclf.estimators.weighted import weighted_fractions

__all__ = ["DEFAULT_BLOCK_FACTOR", "block_clusters", "correlated_fractions", "integrated_autocorrelation_time",
           "two_state_free_energy"]

#: Block length in units of the integrated autocorrelation time, when it is chosen automatically.
DEFAULT_BLOCK_FACTOR = 10.0


def integrated_autocorrelation_time(series: ArrayLike, window_factor: float = 5.0) -> float:
    """Integrated autocorrelation time ``τ = 1 + 2 Σ_{t≥1} ρ(t)`` of a stationary series, in frames.

    The autocovariance is computed per walker by FFT around the mean over *all* walkers (so walkers that
    sit at different means show up as slowly decaying correlation, not as independent noise), averaged
    over walkers and normalised by its lag-0 value. The sum is truncated at Sokal's automatic window, the
    smallest lag ``M`` with ``M ≥ window_factor · τ(M)``.

    Parameters
    ----------
    series
        ``(n_frames,)`` or ``(n_walkers, n_frames)`` real values, frames in time order; finite.
    window_factor
        Sokal's ``c`` (5 is customary for nearly exponential decay).

    Returns
    -------
    float
        τ in frames, at least 1 (the statistical inefficiency: an SE is ``√(τ/N)`` times the iid one).
        1 for a constant series.

    Raises
    ------
    ValueError
        Wrong shape or non-finite values.
    """
    x = _walker_series(as_float64(series, "series"), "series")
    if not torch.isfinite(x).all():
        raise EstimatorInputError("series: non-finite values")
    return float(_autocorrelation_times(x.unsqueeze(-1), window_factor)[0])


def _autocorrelation_times(x: torch.Tensor, window_factor: float = 5.0) -> torch.Tensor:
    """τ of each of K series at once: ``x`` is ``(n_walkers, n_frames, K)`` float64; returns ``(K,)``."""
    n_walkers, n, k = x.shape
    x = (x - x.mean((0, 1))).permute(2, 0, 1)  # (K, walkers, frames)
    if n < 2:
        return torch.ones(k, dtype=torch.float64)
    size = 1 << (2 * n - 1).bit_length()
    out = torch.ones(k, dtype=torch.float64)
    lags = torch.arange(n, dtype=torch.float64)
    for j in range(k):  # one series at a time keeps the FFT buffers at (walkers, size)
        if not bool(x[j].any()):
            continue  # a constant series: τ = 1
        spectrum = torch.fft.rfft(x[j], n=size, dim=-1)
        acov = torch.fft.irfft(spectrum.real.square() + spectrum.imag.square(), n=size, dim=-1)
        acov = acov[:, :n].sum(0).cpu()
        if float(acov[0]) <= 0.0:
            continue
        taus = 2.0 * torch.cumsum(acov / acov[0], 0) - 1.0  # taus[m] = 1 + 2 Σ_{t=1}^{m} ρ(t)
        ok = torch.nonzero(lags >= window_factor * taus)
        m = int(ok[0]) if len(ok) else n - 1
        out[j] = max(float(taus[m]), 1.0)
    return out


def block_clusters(n_walkers: int, n_frames: int, block_length: int) -> torch.Tensor:
    """Cluster ids ``(n_walkers, n_frames)`` of contiguous blocks within each walker.

    Frame ``t`` of walker ``k`` gets ``k · n_blocks + t // block_length``; a shorter last block is kept
    (it carries its own frames, no data is dropped).
    """
    if not isinstance(block_length, int) or isinstance(block_length, bool) or block_length < 1:
        raise EstimatorInputError(f"block_length: expected an integer >= 1, got {block_length!r}")
    per_walker = -(-n_frames // block_length)
    block = torch.arange(n_frames) // block_length
    return torch.arange(n_walkers).unsqueeze(1) * per_walker + block.unsqueeze(0)


def _walker_series(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise EstimatorInputError(f"{name}: expected shape (n_frames,) or (n_walkers, n_frames), "
                                  f"got {tuple(x.shape)}")
    return x


def correlated_fractions(labels: ArrayLike, n_classes: int, log_w: Optional[ArrayLike] = None,
                         clusters: Optional[ArrayLike] = None, block_length: Optional[int] = None,
                         block_factor: float = DEFAULT_BLOCK_FACTOR) -> Estimate:
    """Weighted fraction of frames in each class, with an error bar for correlated frames.

    Parameters
    ----------
    labels
        ``(n_frames,)`` or ``(n_walkers, n_frames)`` integer class of each frame in ``[0, n_classes)``;
        walkers are independent, frames within a walker in time order.
    n_classes
        Number of classes K >= 1.
    log_w
        Optional log-weights, same shape (natural log, pooled over all walkers); ``None`` = equal.
    clusters
        Optional integer cluster ids, same shape, that define the independent units (e.g. ancestor
        indices of resampled particles); ids are global (equal ids in two walkers are one cluster).
        Excludes ``block_length``.
    block_length
        Frames per block (see the module docstring); ``None`` = ``ceil(block_factor · τ)``, capped at
        the walker length; 1 = independent frames.
    block_factor
        Block length in units of τ when it is chosen automatically.

    Returns
    -------
    Estimate
        ``value``, ``se``: ``(K,)`` fractions (dimensionless, sum 1) and standard errors; ``n_eff``:
        ``Σ_k P_k(1 − P_k) / Σ_k se_k²``, the number of independent unweighted frames that would give
        the same error bars (NaN when all se are 0). ``method`` states the clusters used.

    Raises
    ------
    ValueError
        Bad labels, shapes that do not match, bad log-weights, or both ``clusters`` and ``block_length``.
    """
    lab = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
    if lab.dtype == torch.bool or lab.is_floating_point() or lab.is_complex():
        raise EstimatorInputError(f"labels: expected integer class ids, got dtype {lab.dtype}")
    lab = _walker_series(lab.to(torch.int64).cpu(), "labels")
    shape = tuple(lab.shape)
    lw = None
    if log_w is not None:
        lw = check_log_weights(log_w, "log_w").cpu()
        if tuple(_walker_series(lw, "log_w").shape) != shape:
            raise EstimatorInputError(f"log_w: expected the shape of labels {shape}, got {tuple(lw.shape)}")
        lw = lw.reshape(shape)
    if clusters is not None:
        if block_length is not None:
            raise EstimatorInputError("clusters and block_length: give one or the other, not both")
        c = clusters if isinstance(clusters, torch.Tensor) else torch.as_tensor(clusters)
        if tuple(_walker_series(c, "clusters").shape) != shape:
            raise EstimatorInputError(f"clusters: expected the shape of labels, got {tuple(c.shape)}")
        method = "given clusters"
    else:
        if block_length is None:
            tau = _influence_tau(lab, n_classes, lw)
            block_length = min(max(1, math.ceil(block_factor * tau)), shape[1])
            method = f"blocks of {block_length} frames (= ceil({block_factor:g} × τ = {tau:.3g} frames))"
        else:
            method = f"blocks of {block_length} frames (given)"
        c = block_clusters(shape[0], shape[1], block_length)
        method += f" within each of {shape[0]} walker(s)"
    est = weighted_fractions(lab.reshape(-1), n_classes, None if lw is None else lw.reshape(-1),
                             clusters=c.reshape(-1))
    var = (est.value * (1.0 - est.value)).sum()
    se2 = est.se.square().sum()
    n_eff = var / se2 if float(se2) > 0 else torch.tensor(math.nan, dtype=torch.float64)
    return Estimate(value=est.value, se=est.se, n_eff=n_eff,
                    method=f"self-normalised weighted fractions; cluster-robust SE over {method}; "
                           "n_eff = sum P(1-P) / sum se^2")


def _influence_tau(labels: torch.Tensor, n_classes: int, log_w: Optional[torch.Tensor]) -> float:
    """Largest τ over the classes of the series ``N W_i (1[label_i = k] − P_k)``, per walker."""
    onehot = torch.nn.functional.one_hot(labels, n_classes).to(torch.float64)  # (walkers, frames, K)
    if log_w is None:
        w = torch.ones(labels.shape, dtype=torch.float64)
    else:
        w = torch.softmax(log_w.reshape(-1), 0).reshape(labels.shape) * labels.numel()
    mean = (w.unsqueeze(-1) * onehot).sum((0, 1)) / w.sum()
    influence = w.unsqueeze(-1) * (onehot - mean)
    if n_classes == 2:  # the two columns are negatives of each other: one τ
        influence = influence[..., 1:]
    return float(_autocorrelation_times(influence).max())


def two_state_free_energy(in_state: ArrayLike, log_w: Optional[ArrayLike] = None,
                          clusters: Optional[ArrayLike] = None, block_length: Optional[int] = None,
                          block_factor: float = DEFAULT_BLOCK_FACTOR) -> Estimate:
    """``ΔF(A vs B) = −ln(P(A)/P(B))`` in kT for a state A (frames where ``in_state``) and its complement B.

    Parameters
    ----------
    in_state
        ``(n_frames,)`` or ``(n_walkers, n_frames)`` booleans (or 0/1 integers): the frame is in A.
    log_w, clusters, block_length, block_factor
        As in :func:`correlated_fractions`.

    Returns
    -------
    Estimate
        ``value``: 0-d ΔF in kT (positive when A is less populated than B; ±∞ when a state is empty);
        ``se``: delta-method ``se(P_A) / (P_A (1 − P_A))`` in kT (NaN when a state is empty);
        ``n_eff``: as in :func:`correlated_fractions`.
    """
    s = in_state if isinstance(in_state, torch.Tensor) else torch.as_tensor(in_state)
    if s.dtype != torch.bool and (s.is_floating_point() or s.is_complex() or ((s != 0) & (s != 1)).any()):
        raise EstimatorInputError("in_state: expected booleans or 0/1 integers")
    labels = (s != 0).to(torch.int64)  # 1 = A, 0 = B
    frac = correlated_fractions(labels, 2, log_w, clusters, block_length, block_factor)
    p_a, p_b = frac.value[1], frac.value[0]
    with torch.no_grad():
        if float(p_a) == 0.0 or float(p_b) == 0.0:
            value = torch.tensor(math.inf if float(p_a) == 0.0 else -math.inf, dtype=torch.float64)
            se = torch.tensor(math.nan, dtype=torch.float64)
        else:
            value = -(torch.log(p_a) - torch.log(p_b))
            se = frac.se[1] / (p_a * p_b)
    return Estimate(value=value, se=se, n_eff=frac.n_eff,
                    method="ΔF = -ln(P_A/P_B) in kT; delta-method SE se(P_A)/(P_A P_B) from "
                           + frac.method)
