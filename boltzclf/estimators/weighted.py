"""Self-normalised weighted observables with error bars, for weighted and for resampled samples.

Shapes follow the weights: log-weights (or cluster ids) are ``(..., N)`` with samples on the last axis
and independent batches in front; an observable is ``(..., N)`` (one scalar per sample) or
``(..., N, K)`` (K observables per sample, estimated together). Results are float64 tensors of shape
``(...)`` or ``(..., K)``, in the unit of the observable.

Which error bar?

* Independent draws from a proposal, each with its own weight: :func:`weighted_mean`.
* Resampled particles (SMC after multinomial / systematic / residual resampling, or any sample in which
  several entries are copies of, or descend from, the same draw): :func:`clustered_mean`, with the
  ancestor index of each particle as its cluster. Copies of one ancestor are perfectly correlated; an
  error bar that counts them as independent draws (the naive ``std/√N`` of the resampled values, or
  :func:`weighted_mean` with equal weights) only sees the resampling noise and misses the variance of
  the importance weights that chose the ancestors, so it is too small, by a factor ≈ √(N/ESS) when the
  weights before resampling were uneven. Treating each ancestor as one unit recovers both parts.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from boltzclf.estimators.estimate import Estimate, EstimatorInputError
from boltzclf.estimators.importance import ArrayLike, as_float64, check_log_weights

__all__ = ["clustered_mean", "weighted_fractions", "weighted_mean"]


def _check_values(values: ArrayLike, batch_n: tuple[int, ...], ref: str) -> tuple[torch.Tensor, bool]:
    """Values as float64 ``(..., N, K)`` and whether they were ``(..., N)`` (then K = 1 is added)."""
    f = as_float64(values, "values")
    shape = tuple(f.shape)
    if shape == batch_n:
        f, scalar = f.unsqueeze(-1), True
    elif len(shape) == len(batch_n) + 1 and shape[:-1] == batch_n:
        scalar = False
    else:
        raise EstimatorInputError(f"values: expected shape {batch_n} or {batch_n + ('K',)} to match {ref} "
                                  f"{batch_n}, got {shape}")
    bad = ~torch.isfinite(f)
    if bad.any():
        raise EstimatorInputError(f"values: {int(bad.sum())} non-finite entries (first at indices "
                                  f"{torch.nonzero(bad)[:5].tolist()}); they are not dropped silently")
    return f, scalar


def _check_clusters(clusters: ArrayLike, shape: Optional[tuple[int, ...]]) -> torch.Tensor:
    c = clusters if isinstance(clusters, torch.Tensor) else torch.as_tensor(clusters)
    if c.dtype == torch.bool or c.is_floating_point() or c.is_complex():
        raise EstimatorInputError(f"clusters: expected integer ids (e.g. ancestor indices), got dtype {c.dtype}")
    if c.dim() == 0 or c.shape[-1] == 0 or (shape is not None and tuple(c.shape) != shape):
        want = shape if shape is not None else "(..., N) with N >= 1"
        raise EstimatorInputError(f"clusters: expected shape {want} (one id per sample), got {tuple(c.shape)}")
    return c.to(torch.int64)


def _sum_within_clusters(r: torch.Tensor, clusters: torch.Tensor) -> torch.Tensor:
    """Sum ``r`` ``(..., N, K)`` over the samples of each cluster: ``(..., M, K)``, M = distinct ids.

    Clusters are separate in every batch; a cluster absent from a batch contributes a zero row.
    """
    batch = clusters.shape[:-1]
    _, inverse = torch.unique(clusters, return_inverse=True)
    m = int(inverse.max()) + 1
    rows = torch.arange(math.prod(batch), device=clusters.device).reshape(*batch, 1)
    index = (rows * m + inverse).reshape(-1)
    k = r.shape[-1]
    out = torch.zeros(math.prod(batch) * m, k, dtype=r.dtype, device=r.device)
    out.index_add_(0, index, r.reshape(-1, k))
    return out.reshape(*batch, m, k)


def _estimate(value: torch.Tensor, se2: torch.Tensor, n_eff: torch.Tensor, scalar: bool,
              method: str) -> Estimate:
    se = se2.clamp_min(0.0).sqrt()
    if scalar:
        value, se = value.squeeze(-1), se.squeeze(-1)
    return Estimate(value=value, se=se, n_eff=n_eff, method=method)


def weighted_mean(values: ArrayLike, log_w: ArrayLike) -> Estimate:
    """Self-normalised importance-sampling mean ``μ̂ = Σ_i W_i f_i`` with its delta-method error.

    For independent draws ``x_i ~ q`` with ``log w_i = log p̃(x_i) − log q(x_i)``, ``μ̂`` estimates
    ``E_p[f]`` (consistent; bias O(1/N)). Linearising the ratio ``Σ w f / Σ w`` gives the standard error

        ``se² = Σ_i W_i² (f_i − μ̂)²``

    (the asymptotic variance estimate, no N/(N−1) correction). It assumes the N draws are independent;
    for resampled particles use :func:`clustered_mean`.

    Parameters
    ----------
    values
        ``(..., N)`` or ``(..., N, K)`` observable ``f(x_i)``, any unit; must be finite.
    log_w
        ``(..., N)`` log-weights (natural log, dimensionless, any additive constant; ``−inf`` = weight 0).

    Returns
    -------
    Estimate
        ``value`` and ``se``: ``(...)`` or ``(..., K)``, unit of ``values``; ``n_eff``: ``(...)`` Kish ESS
        ``1/Σ W_i²`` (a count).

    Raises
    ------
    ValueError
        NaN / ``+inf`` / all ``−inf`` log-weights, non-finite values, or shapes that do not match.
    """
    lw = check_log_weights(log_w)
    f, scalar = _check_values(values, tuple(lw.shape), "log_w")
    w = torch.softmax(lw, -1).unsqueeze(-1)
    mu = (w * f).sum(-2)
    se2 = (w.square() * (f - mu.unsqueeze(-2)).square()).sum(-2)
    return _estimate(mu, se2, 1.0 / w.squeeze(-1).square().sum(-1), scalar,
                     "self-normalised importance sampling; delta-method SE sum W_i^2 (f_i - mean)^2; "
                     "n_eff = Kish ESS")


def clustered_mean(values: ArrayLike, clusters: ArrayLike, log_w: Optional[ArrayLike] = None) -> Estimate:
    """Weighted mean with a cluster-robust (sandwich) error bar, for resampled or otherwise grouped samples.

    The estimate is the same as :func:`weighted_mean`, ``μ̂ = Σ_i W_i f_i``. The error treats every
    cluster ``c`` (e.g. all particles that descend from one ancestor) as one independent unit:

        ``se² = Σ_c ( Σ_{i∈c} W_i (f_i − μ̂) )²``

    This is the linearisation (sandwich) variance of the ratio estimator ``Σ_c A_c / Σ_c B_c`` over
    independent clusters, with ``A_c = Σ_{i∈c} w_i f_i`` and ``B_c = Σ_{i∈c} w_i``; within a cluster any
    correlation is allowed. With one sample per cluster it equals the :func:`weighted_mean` error.

    Why this is right for resampling: after multinomial resampling of N weighted draws with weights
    ``W_j`` into N particles, ancestor j has ``n_j`` copies and ``E[(n_j/N)²] = W_j²(1 − 1/N) + W_j/N``,
    so the expected ``se²`` is ``Σ_j W_j² (f_j − μ)² + (1/N) Σ_j W_j (f_j − μ)²``: the importance-sampling
    variance of the ancestors plus the resampling variance, which is the variance of the resampled mean.
    Counting the copies as independent gives only the second term (≈ Var_p(f)/N), too small by
    ≈ √(N/ESS) for uneven weights. The ancestors must themselves be independent draws (give the
    ancestor at the last point where particles were independent, e.g. the initial particle in SMC), and
    the error bar needs many clusters: with few it is noisy and too small (0 for a single cluster).

    Parameters
    ----------
    values
        ``(..., N)`` or ``(..., N, K)`` observable per sample, any unit; must be finite.
    clusters
        ``(..., N)`` integer cluster ids, e.g. the index of the ancestor each particle descends from; only
        equality matters. Clusters in different batches are distinct.
    log_w
        ``(..., N)`` log-weights of the samples as they are now (natural log, dimensionless); ``None``
        means equal weights, as right after resampling.

    Returns
    -------
    Estimate
        ``value``, ``se``: ``(...)`` or ``(..., K)``, unit of ``values``; ``n_eff``: ``(...)`` Kish ESS of
        the clusters' total weights, ``1 / Σ_c (Σ_{i∈c} W_i)²`` (a count of effective independent units).

    Raises
    ------
    ValueError
        Non-integer cluster ids, shapes that do not match, non-finite values, or bad log-weights.
    """
    if log_w is None:
        c = _check_clusters(clusters, None)
        lw = torch.zeros(c.shape, dtype=torch.float64, device=c.device)
    else:
        lw = check_log_weights(log_w)
        c = _check_clusters(clusters, tuple(lw.shape))
    f, scalar = _check_values(values, tuple(c.shape), "clusters")
    w = torch.softmax(lw, -1).unsqueeze(-1)
    mu = (w * f).sum(-2)
    per_cluster = _sum_within_clusters(w * (f - mu.unsqueeze(-2)), c)
    cluster_weight = _sum_within_clusters(w, c).squeeze(-1)
    return _estimate(mu, per_cluster.square().sum(-2), 1.0 / cluster_weight.square().sum(-1), scalar,
                     "self-normalised weighted mean; cluster-robust (sandwich) SE "
                     "sum_c (sum_{i in c} W_i (f_i - mean))^2; n_eff = Kish ESS of cluster weights")


def weighted_fractions(labels: ArrayLike, n_classes: int, log_w: Optional[ArrayLike] = None,
                       clusters: Optional[ArrayLike] = None) -> Estimate:
    """Weighted fraction of samples in each class (e.g. the probability mass of each mode or basin).

    The fraction of class k is the weighted mean of the indicator ``1[label_i = k]``; the error is that of
    :func:`weighted_mean` for independent weighted draws, or of :func:`clustered_mean` when ``clusters``
    is given (resampled particles). Fractions sum to 1 over the classes.

    Parameters
    ----------
    labels
        ``(..., N)`` integer class of each sample, in ``[0, n_classes)``.
    n_classes
        Number of classes K >= 1.
    log_w
        ``(..., N)`` log-weights (natural log, dimensionless); ``None`` = equal weights.
    clusters
        ``(..., N)`` integer cluster ids (e.g. ancestor indices) for resampled samples, or ``None``.

    Returns
    -------
    Estimate
        ``value``, ``se``: ``(..., n_classes)`` fractions (dimensionless) and their standard errors;
        ``n_eff``: ``(...)`` as in the estimator used.

    Raises
    ------
    ValueError
        Non-integer labels, labels outside ``[0, n_classes)``, shapes that do not match, bad log-weights.
    """
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 1:
        raise EstimatorInputError(f"n_classes: expected an integer >= 1, got {n_classes!r}")
    lab = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
    if lab.dtype == torch.bool or lab.is_floating_point() or lab.is_complex():
        raise EstimatorInputError(f"labels: expected integer class ids, got dtype {lab.dtype}")
    if lab.dim() == 0 or lab.shape[-1] == 0:
        raise EstimatorInputError(f"labels: expected shape (..., N) with N >= 1, got {tuple(lab.shape)}")
    out = (lab < 0) | (lab >= n_classes)
    if out.any():
        raise EstimatorInputError(f"labels: {int(out.sum())} outside [0, {n_classes}) (first values "
                                  f"{lab[out][:5].tolist()})")
    onehot = torch.nn.functional.one_hot(lab.to(torch.int64), n_classes).to(torch.float64)
    if clusters is not None:
        return clustered_mean(onehot, clusters, log_w)
    if log_w is None:
        log_w = torch.zeros(lab.shape, dtype=torch.float64, device=lab.device)
    return weighted_mean(onehot, log_w)
