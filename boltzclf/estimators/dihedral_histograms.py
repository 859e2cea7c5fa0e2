"""Histogram metrics on a dihedral (φ/ψ) grid: ScoreMD's PMF error and the Jensen–Shannon divergence.

Grid. Angles (radians, any branch) are wrapped into ``[−π, π)`` and binned on a regular
``bins × bins`` grid of that square (64 × 64 by default, bin width 2π/64); wrapping means nothing falls
outside. Optional per-sample log-weights (natural log) give weighted histograms; bin probabilities
``p_b`` sum to 1. On a regular grid the density is ``p_b / V`` with one bin volume ``V``, so free
energies ``F_b = −ln p_b`` (kT) differ from ``−ln`` of the density only by the constant ``ln V``.

**PMF error** (Plainer, Wu, Klein, Günnemann & Noé, "Consistent Sampling and Simulation: Molecular
Dynamics with Energy-Based Diffusion Models", NeurIPS 2025; code noegroup/ScoreMD,
``grid_pointwise(..., loss=fe_sq_error, weight="mix", baseline=1e-6)``, reported there as
``rms_fe_sq_error``): the probability-weighted mean of squared free-energy differences,

    ``E = Σ_b w_b (ΔF_b)²``,  ``ΔF_b = F^model_b − F^ref_b = ln p̃^ref_b − ln p̃^model_b``  (kT²),

over the bins populated in either histogram. An empty bin on one side gets the probability floor
``p̃ = floor`` (1e-6 by default, ScoreMD's ``baseline``; probabilities are not renormalised after
flooring); populated bins keep ``p̃ = p``. The weights are the mixture ``w_b ∝ (p̃^ref_b + p̃^model_b)/2``
(``weighting="mixture"``, ScoreMD's default), normalised over the compared bins, or the reference
``w_b ∝ p^ref_b`` (``weighting="reference"``: only bins populated in the reference count, and only the
model's empty bins are floored). How many bins were floored on each side is reported, because the
floored bins carry ``(ln floor − ln p)²`` — of order 100 kT² for a missing basin — and dominate the error
when the model misses density the reference has. Despite ScoreMD's name ``rms_…`` no square root is
taken: the unit is kT². We also report the **offset-free** variant
``E_aligned = Σ_b w_b (ΔF_b − Σ_c w_c ΔF_c)²``: each surface is shifted by its weighted mean before
differencing, which is the minimum of ``Σ w (ΔF − c)²`` over constant offsets ``c``, so surfaces that
differ by a constant (e.g. in how they were normalised or zeroed) score 0.

Difference from ScoreMD's code, stated so numbers can be compared: its ``discretize`` builds
``n_bins − 1`` edges with ``np.digitize``, i.e. 62 bins of width 2π/62 inside [−π, π] plus two outlier
bins, for what it calls a 64-bin grid. ``bins=62`` here reproduces its in-range binning (angles exactly
at π aside); ``bins=64`` (default) is a true 64 × 64 grid, as in its JS divergence.

**Jensen–Shannon divergence** (ScoreMD's ``js_divergence``, ``scipy.spatial.distance.jensenshannon``
squared, natural log): ``JS(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M)`` with ``M = (P + Q)/2`` on the bin
probabilities, ``0 · ln 0 = 0``; in nats, between 0 and ln 2. Empty bins need no floor.

Neither metric has an error bar here: both are biased by finite samples (a histogram of ``n`` samples of
the reference itself does not score 0), so compare models at equal sample sizes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Optional

import numpy as np

from boltzclf.estimators.estimate import EstimatorInputError
from boltzclf.estimators.importance import ArrayLike, as_float64, check_log_weights

__all__ = ["DEFAULT_BINS", "DEFAULT_FLOOR", "PMFError", "dihedral_histogram", "js_divergence",
           "js_divergence_from_probabilities", "pmf_error", "pmf_error_from_probabilities", "wrap_angle"]

#: Bins per angle of the φ/ψ grid (ScoreMD's 64).
DEFAULT_BINS = 64
#: Probability given to an empty bin in the PMF error (ScoreMD's ``baseline``).
DEFAULT_FLOOR = 1e-6


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angles (radians) mapped into ``[−π, π)``, elementwise."""
    return (np.asarray(angle, dtype=np.float64) + np.pi) % (2.0 * np.pi) - np.pi


def dihedral_histogram(angles: ArrayLike, log_w: Optional[ArrayLike] = None,
                       bins: int = DEFAULT_BINS) -> np.ndarray:
    """Normalised (weighted) histogram of angle pairs on a periodic ``bins × bins`` grid of [−π, π)².

    Parameters
    ----------
    angles
        ``(N, 2)`` angle pairs in radians, e.g. (φ, ψ); any branch (wrapped into [−π, π)).
    log_w
        Optional ``(N,)`` log-weights (natural log, any additive constant); ``None`` = equal weights.
    bins
        Bins per angle; bin ``i`` along an axis is ``[−π + i·2π/bins, −π + (i+1)·2π/bins)``.

    Returns
    -------
    numpy.ndarray
        ``(bins, bins)`` bin probabilities (dimensionless, sum 1); axis 0 is the first angle.

    Raises
    ------
    ValueError
        Wrong shapes, non-finite angles, bad log-weights or ``bins < 1``.
    """
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise EstimatorInputError(f"bins: expected an integer >= 1, got {bins!r}")
    x = as_float64(angles, "angles").cpu().numpy()
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] == 0:
        raise EstimatorInputError(f"angles: expected shape (N, 2) with N >= 1, got {tuple(x.shape)}")
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        raise EstimatorInputError(f"angles: {int(bad.sum())} samples with non-finite angles (first "
                                  f"{np.flatnonzero(bad)[:5].tolist()}); they are not dropped silently")
    if log_w is None:
        w = np.ones(len(x))
    else:
        lw = check_log_weights(log_w, "log_w")
        if tuple(lw.shape) != (len(x),):
            raise EstimatorInputError(f"log_w: expected shape ({len(x)},) to match angles, got {tuple(lw.shape)}")
        w = np.exp((lw - lw.max()).cpu().numpy())
    index = np.floor((wrap_angle(x) + np.pi) * (bins / (2.0 * np.pi))).astype(np.int64)
    index = np.clip(index, 0, bins - 1)  # guards the last ulp below π, which rounds up to bins
    hist = np.bincount(index[:, 0] * bins + index[:, 1], weights=w, minlength=bins * bins)
    return (hist / hist.sum()).reshape(bins, bins)


def _probabilities(p: ArrayLike, name: str) -> np.ndarray:
    q = as_float64(p, name).cpu().numpy()
    if q.ndim == 0 or q.size == 0 or not np.isfinite(q).all() or (q < 0).any() or q.sum() <= 0:
        raise EstimatorInputError(f"{name}: expected a non-empty array of finite, non-negative bin "
                                  f"probabilities with a positive sum (shape {tuple(q.shape)})")
    return q / q.sum()


@dataclass(frozen=True)
class PMFError:
    """ScoreMD's PMF error with its bookkeeping (see the module docstring for the definition).

    Attributes
    ----------
    value
        ``Σ_b w_b (ΔF_b)²`` over the compared bins, kT² (ScoreMD's ``rms_fe_sq_error``).
    aligned
        Offset-free ``Σ_b w_b (ΔF_b − Σ_c w_c ΔF_c)²``, kT² (0 for surfaces equal up to a constant).
    mean_difference
        ``Σ_b w_b ΔF_b``, the removed offset, kT.
    n_bins_compared
        Bins entering the sum.
    n_model_floored
        Compared bins populated in the reference but empty in the model (given ``floor``).
    n_reference_floored
        Compared bins populated in the model but empty in the reference (given ``floor``; 0 for
        ``weighting="reference"``, which does not compare them).
    weighting, floor, bins
        The settings used (``bins`` per axis; 0 when probabilities were given directly).
    """

    value: float
    aligned: float
    mean_difference: float
    n_bins_compared: int
    n_model_floored: int
    n_reference_floored: int
    weighting: str
    floor: float
    bins: int

    def as_dict(self) -> dict:
        """JSON-ready copy, with the unit."""
        return {**asdict(self), "unit": "kT^2"}


def pmf_error_from_probabilities(p_reference: ArrayLike, p_model: ArrayLike,
                                 weighting: Literal["mixture", "reference"] = "mixture",
                                 floor: float = DEFAULT_FLOOR) -> PMFError:
    """PMF error between two histograms given as bin probabilities on the same grid.

    Parameters
    ----------
    p_reference, p_model
        Bin probabilities (or counts; each is normalised to sum 1), same shape, any number of axes.
    weighting
        ``"mixture"`` (ScoreMD) or ``"reference"``; see the module docstring.
    floor
        Probability given to an empty bin, ``0 < floor < 1``.

    Returns
    -------
    PMFError
        The error in kT², its offset-free variant and the counts of floored bins.

    Raises
    ------
    ValueError
        Shapes that differ, negative or non-finite probabilities, a bad ``weighting`` or ``floor``.
    """
    p, q = _probabilities(p_reference, "p_reference"), _probabilities(p_model, "p_model")
    if p.shape != q.shape:
        raise EstimatorInputError(f"p_reference, p_model: shapes differ, {p.shape} and {q.shape}")
    if not 0.0 < floor < 1.0:
        raise EstimatorInputError(f"floor: expected 0 < floor < 1, got {floor!r}")
    p, q = p.ravel(), q.ravel()
    if weighting == "mixture":
        compared = (p > 0) | (q > 0)
    elif weighting == "reference":
        compared = p > 0
    else:
        raise EstimatorInputError(f"weighting: expected 'mixture' or 'reference', got {weighting!r}")
    pf, qf = np.where(p > 0, p, floor)[compared], np.where(q > 0, q, floor)[compared]
    w = 0.5 * (pf + qf) if weighting == "mixture" else p[compared]
    w = w / w.sum()
    diff = np.log(pf) - np.log(qf)  # F_model − F_ref, kT
    mean = float(np.sum(w * diff))
    return PMFError(value=float(np.sum(w * diff ** 2)), aligned=float(np.sum(w * (diff - mean) ** 2)),
                    mean_difference=mean, n_bins_compared=int(compared.sum()),
                    n_model_floored=int(((q == 0) & compared).sum()),
                    n_reference_floored=int(((p == 0) & compared).sum()),
                    weighting=weighting, floor=float(floor), bins=0)


def pmf_error(angles_reference: ArrayLike, angles_model: ArrayLike,
              log_w_reference: Optional[ArrayLike] = None, log_w_model: Optional[ArrayLike] = None,
              bins: int = DEFAULT_BINS, weighting: Literal["mixture", "reference"] = "mixture",
              floor: float = DEFAULT_FLOOR) -> PMFError:
    """ScoreMD's PMF error between reference and model samples of (φ, ψ), in kT².

    Parameters
    ----------
    angles_reference, angles_model
        ``(N, 2)`` and ``(M, 2)`` angle pairs in radians.
    log_w_reference, log_w_model
        Optional ``(N,)`` / ``(M,)`` log-weights (natural log); ``None`` = equal weights.
    bins
        Bins per angle (64 by default; 62 reproduces ScoreMD's in-range binning).
    weighting, floor
        See :func:`pmf_error_from_probabilities`.

    Returns
    -------
    PMFError
        ``value`` (kT², ScoreMD's definition), ``aligned`` (offset-free, kT²) and bin counts.
    """
    result = pmf_error_from_probabilities(dihedral_histogram(angles_reference, log_w_reference, bins),
                                          dihedral_histogram(angles_model, log_w_model, bins),
                                          weighting=weighting, floor=floor)
    return PMFError(**{**asdict(result), "bins": bins})


def js_divergence_from_probabilities(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen–Shannon divergence of two histograms on the same grid, in nats.

    Parameters
    ----------
    p, q
        Bin probabilities (or counts; each normalised to sum 1), same shape.

    Returns
    -------
    float
        ``½ KL(p ‖ m) + ½ KL(q ‖ m)``, ``m = (p + q)/2``, natural log; in ``[0, ln 2]``.
    """
    a, b = _probabilities(p, "p").ravel(), _probabilities(q, "q").ravel()
    if a.shape != b.shape:
        raise EstimatorInputError(f"p, q: sizes differ, {a.size} and {b.size}")
    m = 0.5 * (a + b)

    def kl(x: np.ndarray) -> float:
        nz = x > 0  # where x > 0, m > 0 too
        return float(np.sum(x[nz] * np.log(x[nz] / m[nz])))

    return max(0.5 * kl(a) + 0.5 * kl(b), 0.0)


def js_divergence(angles_reference: ArrayLike, angles_model: ArrayLike,
                  log_w_reference: Optional[ArrayLike] = None, log_w_model: Optional[ArrayLike] = None,
                  bins: int = DEFAULT_BINS) -> float:
    """Jensen–Shannon divergence of the (φ, ψ) histograms of two sample sets, in nats.

    Parameters
    ----------
    angles_reference, angles_model
        ``(N, 2)`` and ``(M, 2)`` angle pairs in radians.
    log_w_reference, log_w_model
        Optional ``(N,)`` / ``(M,)`` log-weights (natural log); ``None`` = equal weights.
    bins
        Bins per angle (64 by default, as in ScoreMD).

    Returns
    -------
    float
        JS divergence in nats, in ``[0, ln 2]``.
    """
    return js_divergence_from_probabilities(dihedral_histogram(angles_reference, log_w_reference, bins),
                                            dihedral_histogram(angles_model, log_w_model, bins))
