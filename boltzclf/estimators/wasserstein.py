"""Wasserstein-2 distances between sample sets: energies on the line (E-W2), dihedrals on the torus (T-W2).

Definitions (as in the evaluation of Boltzmann generators by Klein & Noé, "Transferable Boltzmann
Generators", NeurIPS 2024, and Tan et al., "Scalable Equilibrium Sampling with Sequential Boltzmann
Generators", ICML 2025, whose code, transferable-samplers ``evaluation/metrics/wasserstein_distances.py``,
takes energy-w2 as ``sqrt(ot.emd2_1d)`` on the squared metric and torus-w2 as ``sqrt(ot.emd2)`` on
``Σ min(|Δ|, 2π − |Δ|)²`` with uniform weights and no subsampling):

* **E-W2** between two distributions of reduced energies ``u`` (kT):
  ``W2(P, Q) = ( ∫_0^1 (F_P^{-1}(s) − F_Q^{-1}(s))² ds )^{1/2}`` in kT, where ``F^{-1}`` are the quantile
  functions of the (weighted) empirical distributions. In one dimension the optimal coupling is the
  monotone one, so this is exact; it is evaluated here by merging the two cumulative-weight sequences
  (:func:`wasserstein2_1d`), without POT. For two Gaussians it is ``(μ1 − μ2)² + (σ1 − σ2)²`` squared.
* **T-W2** between two clouds of dihedral angles (e.g. backbone φ/ψ, radians), with the flat torus
  metric: the cost between points a and b is ``c(a, b) = Σ_j d(a_j, b_j)²`` with
  ``d(α, β) = min(|α − β| mod 2π, 2π − |α − β| mod 2π)`` (the shorter way round each circle), and
  ``T-W2 = ( min_π Σ_ij π_ij c(a_i, b_j) )^{1/2}`` over couplings π with the two (weighted) marginals,
  solved exactly by POT's network simplex (``ot.emd2``). The cost matrix is N × M, so each side is first
  subsampled (without replacement, seeded) to at most ``max_points`` points, 2,000 by default; that is
  a stated approximation of the full-sample distance, with a small upward bias (an empirical W2 between
  finite samples of one distribution is not zero).

Weights: either side may carry per-sample log-weights (natural log, any additive constant, ``−inf`` =
weight 0), e.g. importance weights of generated samples to the Boltzmann density; they are
self-normalised. Kish ESS/N of such weights is :func:`boltzclf.estimators.importance.effective_sample_size`.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from boltzclf.estimators.estimate import EstimatorInputError
from boltzclf.estimators.importance import ArrayLike, as_float64, check_log_weights

__all__ = ["DEFAULT_MAX_POINTS", "energy_w2", "torus_cost", "torus_w2", "wasserstein2_1d"]

#: Default cap on the points per side of T-W2 (the cost matrix is N × M float64: 32 MB at 2,000²).
DEFAULT_MAX_POINTS = 2000


def _values(x: ArrayLike, name: str, ndim: int) -> np.ndarray:
    v = as_float64(x, name).cpu().numpy()
    if v.ndim != ndim or v.shape[0] == 0:
        want = "(N,)" if ndim == 1 else "(N, D)"
        raise EstimatorInputError(f"{name}: expected shape {want} with N >= 1, got {tuple(v.shape)}")
    bad = ~np.isfinite(v)
    if bad.any():
        raise EstimatorInputError(f"{name}: {int(bad.sum())} non-finite entries (first at indices "
                                  f"{np.argwhere(bad)[:5].tolist()}); they are not dropped silently")
    return v


def _weights(log_w: Optional[ArrayLike], n: int, name: str) -> np.ndarray:
    """Normalised weights ``(n,)`` from log-weights (uniform when ``None``)."""
    if log_w is None:
        return np.full(n, 1.0 / n)
    lw = check_log_weights(log_w, name)
    if tuple(lw.shape) != (n,):
        raise EstimatorInputError(f"{name}: expected shape ({n},) to match the samples, got {tuple(lw.shape)}")
    w = np.exp((lw - lw.max()).cpu().numpy())
    return w / w.sum()


def wasserstein2_1d(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Exact W2 between two weighted empirical distributions on the line, by their quantile functions.

    Parameters
    ----------
    x, y
        ``(N,)`` and ``(M,)`` sample values, any unit, finite.
    a, b
        ``(N,)`` and ``(M,)`` non-negative weights, each summing to 1.

    Returns
    -------
    float
        ``W2`` in the unit of ``x`` (not squared).

    Notes
    -----
    The quantile functions are step functions that only change where a cumulative weight is reached;
    between consecutive breakpoints ``s_{k−1} < s_k`` of the merged cumulative weights both are constant,
    so ``W2² = Σ_k (s_k − s_{k−1}) (F_x^{-1}(m_k) − F_y^{-1}(m_k))²`` with ``m_k`` the interval midpoint.
    """
    ix, iy = np.argsort(x, kind="stable"), np.argsort(y, kind="stable")
    xs, ys = x[ix], y[iy]
    ca, cb = np.cumsum(a[ix]), np.cumsum(b[iy])
    ca /= ca[-1]
    cb /= cb[-1]
    s = np.unique(np.concatenate([[0.0], ca, cb]))
    s = s[(s >= 0.0) & (s <= 1.0)]
    mid = 0.5 * (s[1:] + s[:-1])
    qx = xs[np.minimum(np.searchsorted(ca, mid, side="left"), len(xs) - 1)]
    qy = ys[np.minimum(np.searchsorted(cb, mid, side="left"), len(ys) - 1)]
    return math.sqrt(float(np.sum(np.diff(s) * (qx - qy) ** 2)))


def energy_w2(u_reference: ArrayLike, u_model: ArrayLike, log_w_reference: Optional[ArrayLike] = None,
              log_w_model: Optional[ArrayLike] = None) -> float:
    """E-W2: the Wasserstein-2 distance between two reduced-energy distributions, in kT.

    Parameters
    ----------
    u_reference, u_model
        ``(N,)`` and ``(M,)`` reduced energies (kT, the same temperature and zero of energy on both
        sides), finite; non-finite energies must be counted and removed by the caller.
    log_w_reference, log_w_model
        Optional ``(N,)`` / ``(M,)`` log-weights of the samples (natural log); ``None`` = equal weights.

    Returns
    -------
    float
        W2 in kT (symmetric in its two arguments; 0 for identical weighted samples).

    Raises
    ------
    ValueError
        Wrong shapes, non-finite energies, or bad log-weights.
    """
    x, y = _values(u_reference, "u_reference", 1), _values(u_model, "u_model", 1)
    a = _weights(log_w_reference, len(x), "log_w_reference")
    b = _weights(log_w_model, len(y), "log_w_model")
    return wasserstein2_1d(x, y, a, b)


def torus_cost(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Squared flat-torus distances between two sets of angles.

    Parameters
    ----------
    a, b
        ``(N, D)`` and ``(M, D)`` angles in radians (any branch: 2π-periodic in each coordinate).

    Returns
    -------
    numpy.ndarray
        ``(N, M)`` float64 cost ``Σ_j min(|a_ij − b_kj| mod 2π, 2π − |a_ij − b_kj| mod 2π)²``, in rad².
    """
    x, y = _values(a, "a", 2), _values(b, "b", 2)
    if x.shape[1] != y.shape[1]:
        raise EstimatorInputError(f"a, b: need the same number of angles per point, got {x.shape[1]} and {y.shape[1]}")
    delta = np.abs(x[:, None, :] - y[None, :, :]) % (2.0 * np.pi)
    return np.sum(np.minimum(delta, 2.0 * np.pi - delta) ** 2, axis=-1)


def _subsample(x: np.ndarray, w: np.ndarray, max_points: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of ``x`` chosen uniformly without replacement; weights renormalised."""
    if len(x) <= max_points:
        return x, w
    keep = np.sort(rng.choice(len(x), size=max_points, replace=False))
    w = w[keep]
    if w.sum() <= 0.0:
        raise EstimatorInputError("log-weights: every subsampled point has zero weight; raise max_points")
    return x[keep], w / w.sum()


def torus_w2(angles_reference: ArrayLike, angles_model: ArrayLike,
             log_w_reference: Optional[ArrayLike] = None, log_w_model: Optional[ArrayLike] = None,
             max_points: int = DEFAULT_MAX_POINTS, seed: int = 0) -> float:
    """T-W2: exact optimal-transport Wasserstein-2 distance between angle clouds on the flat torus.

    Parameters
    ----------
    angles_reference, angles_model
        ``(N, D)`` and ``(M, D)`` angles in radians, e.g. ``D = 2`` backbone (φ, ψ); any branch.
    log_w_reference, log_w_model
        Optional ``(N,)`` / ``(M,)`` log-weights (natural log); ``None`` = equal weights.
    max_points
        Each side larger than this is subsampled uniformly without replacement to this many points
        (weights of the kept points renormalised) before the N × M cost matrix is built.
    seed
        Seed of the numpy generator that draws the subsamples (same seed → same number).

    Returns
    -------
    float
        T-W2 in radians (square root of the optimal transport cost in rad²).

    Raises
    ------
    ValueError
        Wrong shapes, non-finite angles, bad log-weights or ``max_points < 1``.
    RuntimeError
        If POT reports that the network simplex did not converge.
    """
    import ot  # POT; imported here so that importing the estimators stays light

    x, y = _values(angles_reference, "angles_reference", 2), _values(angles_model, "angles_model", 2)
    if x.shape[1] != y.shape[1]:
        raise EstimatorInputError(f"angles: need the same number of angles per point, got {x.shape[1]} "
                                  f"and {y.shape[1]}")
    if not isinstance(max_points, int) or isinstance(max_points, bool) or max_points < 1:
        raise EstimatorInputError(f"max_points: expected an integer >= 1, got {max_points!r}")
    a = _weights(log_w_reference, len(x), "log_w_reference")
    b = _weights(log_w_model, len(y), "log_w_model")
    rng = np.random.default_rng(seed)
    x, a = _subsample(x, a, max_points, rng)
    y, b = _subsample(y, b, max_points, rng)
    cost = torus_cost(x, y)
    value, log = ot.emd2(a, b, cost, numItermax=10_000_000, log=True)
    if log.get("warning"):
        raise RuntimeError(f"torus_w2: the exact OT solver did not converge ({log['warning']})")
    return math.sqrt(max(float(value), 0.0))
