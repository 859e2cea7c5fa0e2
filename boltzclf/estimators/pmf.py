"""Free-energy surfaces (PMFs) from CV samples by weighted histograms with block-bootstrap errors.

The free energy of a bin is ``F = −ln(P_bin / V_bin)`` in kT, the negative log of the normalised
probability density, so it is gauge-fixed and directly comparable with a known density; plots shift it
to a zero minimum. Uncertainties come from a bootstrap over contiguous blocks of the (time-ordered)
samples, which stays honest for correlated MD frames when blocks are longer than the correlation time.
Optional per-frame log-weights reweight the samples (e.g. to a different target); they are never capped.
Basin free energies ``−ln P(basin)`` (:func:`basin_free_energies`) use the same blocks and bootstrap.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from boltzclf.core.errors import BoltzclfError


@dataclass(frozen=True)
class FreeEnergySurface:
    """A histogram free-energy estimate on a regular grid.

    Attributes
    ----------
    edges
        Bin edges per CV dimension, each ``(n_bins_d + 1,)``.
    free_energy
        ``(n_bins_1, ..., n_bins_d)`` kT, ``−ln`` of the normalised density; ``inf`` in empty bins.
    stderr
        Bootstrap standard error of ``free_energy`` (kT); NaN where a bin is empty in any replicate.
    probability
        Bin probabilities, summing to 1.
    replicates
        ``(n_bootstrap, *bins)`` bootstrap replicates of ``free_energy`` (for errors of derived
        quantities such as basin differences).
    n_samples, ess
        Number of samples and Kish effective sample size of the weights.
    method
        Description of the estimator and its error model.
    """

    edges: tuple[np.ndarray, ...]
    free_energy: np.ndarray
    stderr: np.ndarray
    probability: np.ndarray
    replicates: np.ndarray = field(repr=False)
    n_samples: int
    ess: float
    method: str

    @property
    def centers(self) -> tuple[np.ndarray, ...]:
        return tuple(0.5 * (e[1:] + e[:-1]) for e in self.edges)

    def to_dict(self) -> dict:
        """JSON-ready arrays as nested lists (``inf``/NaN become ``null`` in JSON)."""
        return {"edges": [e.tolist() for e in self.edges], "centers": [c.tolist() for c in self.centers],
                "free_energy_kT": self.free_energy.tolist(), "stderr_kT": self.stderr.tolist(),
                "probability": self.probability.tolist(), "n_samples": self.n_samples,
                "ess": self.ess, "method": self.method}


def _check_inputs(cv: np.ndarray, log_weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    cv = np.asarray(cv, dtype=np.float64)
    cv = cv[:, None] if cv.ndim == 1 else cv
    if cv.ndim != 2 or cv.shape[0] == 0:
        raise BoltzclfError(f"CV values: expected shape (N,) or (N, d) with N > 0, got {cv.shape}")
    if not np.isfinite(cv).all():
        raise BoltzclfError(f"CV values: non-finite entries at frames {np.flatnonzero(~np.isfinite(cv).all(1))[:10].tolist()}")
    if log_weights is None:
        return cv, np.ones(cv.shape[0])
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.shape != (cv.shape[0],):
        raise BoltzclfError(f"log-weights: expected shape ({cv.shape[0]},), got {lw.shape}")
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise BoltzclfError(f"log-weights: NaN or +inf at frames {np.flatnonzero(np.isnan(lw) | np.isposinf(lw))[:10].tolist()}")
    return cv, np.exp(lw - lw.max())


def histogram_free_energy(
    cv: np.ndarray,
    ranges: Sequence[tuple[float, float]],
    bins: int | Sequence[int] = 60,
    periodic: Sequence[bool] | bool = False,
    log_weights: np.ndarray | None = None,
    n_blocks: int = 20,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> FreeEnergySurface:
    """Histogram PMF of ``cv`` with block-bootstrap standard errors.

    Parameters
    ----------
    cv
        ``(N,)`` or ``(N, d)`` CV values, time-ordered (blocks are contiguous runs of frames).
    ranges
        ``d`` pairs ``(low, high)``; for a periodic CV the period is ``high − low`` and values are
        wrapped into it, otherwise samples outside are dropped (they still count in the normalisation).
    bins
        Bins per dimension.
    periodic
        Per dimension (or one for all).
    log_weights
        ``(N,)`` per-frame log-weights (natural log, any additive constant); ``None`` = equal weights.
    n_blocks, n_bootstrap, seed
        Blocks for the bootstrap, number of replicates, and the seed of its random generator.
    """
    cv, weights = _check_inputs(cv, log_weights)
    d = cv.shape[1]
    if len(ranges) != d:
        raise BoltzclfError(f"ranges: need {d} (low, high) pairs for {d}-D CVs, got {len(ranges)}")
    bins = [bins] * d if isinstance(bins, int) else list(bins)
    periodic = [periodic] * d if isinstance(periodic, bool) else list(periodic)
    _check_bootstrap(cv.shape[0], n_blocks, n_bootstrap)
    edges = tuple(np.linspace(lo, hi, n + 1) for (lo, hi), n in zip(ranges, bins))
    wrapped = np.column_stack([
        (c - lo) % (hi - lo) + lo if p else c for c, (lo, hi), p in zip(cv.T, ranges, periodic)])
    volume = np.prod(np.meshgrid(*[np.diff(e) for e in edges], indexing="ij"), axis=0)
    block_hist, block_total = _block_histograms(wrapped, weights, edges, n_blocks)
    free_energy, probability = _free_energy(block_hist.sum(0), block_total.sum(), volume)
    counts = _bootstrap_counts(n_blocks, n_bootstrap, seed)
    flat = block_hist.reshape(n_blocks, -1)
    replicates = np.stack([_free_energy((c @ flat).reshape(volume.shape), c @ block_total, volume)[0]
                           for c in counts])
    with np.errstate(invalid="ignore"):
        stderr = np.where(np.isfinite(replicates).all(0), replicates.std(0, ddof=1), np.nan)
    return FreeEnergySurface(
        edges=edges, free_energy=free_energy, stderr=stderr, probability=probability,
        replicates=replicates, n_samples=cv.shape[0], ess=float(weights.sum() ** 2 / (weights ** 2).sum()),
        method=f"weighted histogram; block bootstrap ({n_blocks} contiguous blocks, {n_bootstrap} replicates)")


def _check_bootstrap(n_samples: int, n_blocks: int, n_bootstrap: int) -> None:
    if not 2 <= n_blocks <= n_samples:
        raise BoltzclfError(f"n_blocks: need 2 <= n_blocks <= N = {n_samples}, got {n_blocks}")
    if n_bootstrap < 2:
        raise BoltzclfError(f"n_bootstrap: need at least 2 replicates for a standard error, got {n_bootstrap}")


def _block_labels(n_samples: int, n_blocks: int) -> np.ndarray:
    """``(n_samples,)`` index of the contiguous block (as :func:`numpy.array_split`) of each sample."""
    return np.repeat(np.arange(n_blocks), [len(c) for c in np.array_split(np.arange(n_samples), n_blocks)])


def _bootstrap_counts(n_blocks: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """``(n_bootstrap, n_blocks)`` how often each block is drawn in each replicate (with replacement)."""
    return np.random.default_rng(seed).multinomial(n_blocks, np.full(n_blocks, 1 / n_blocks), size=n_bootstrap)


def _block_histograms(values: np.ndarray, weights: np.ndarray, edges: tuple[np.ndarray, ...],
                      n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted histograms ``(n_blocks, *bins)`` of contiguous blocks, and each block's total weight."""
    shape = tuple(len(e) - 1 for e in edges)
    index = [np.searchsorted(e, v, side="right") - 1 for e, v in zip(edges, values.T)]
    for i, (e, v) in enumerate(zip(edges, values.T)):
        index[i][v == e[-1]] = len(e) - 2  # the last bin is closed, as in numpy.histogram
    inside = np.logical_and.reduce([(i >= 0) & (i < n) for i, n in zip(index, shape)])
    block = _block_labels(len(weights), n_blocks)
    flat = np.ravel_multi_index([i[inside] for i in index], shape)
    hist = np.bincount(block[inside] * int(np.prod(shape)) + flat, weights=weights[inside],
                       minlength=n_blocks * int(np.prod(shape)))
    return hist.reshape(n_blocks, *shape), np.bincount(block, weights=weights, minlength=n_blocks)


def _free_energy(hist: np.ndarray, total: float, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):  # a replicate may hold no weight: NaN, counted later
        probability = hist / total
        return -np.log(probability / volume), probability


def in_box(cv: np.ndarray, box: Sequence[tuple[float, float]]) -> np.ndarray:
    """``(N,)`` whether each sample of ``cv`` ``(N, d)`` lies in the half-open box ``low <= x < high``.

    Half-open like the histogram's bins, so boxes that share an edge are disjoint; periodic values
    belong wrapped into the boxes' period (for angles ``[−π, π)``, as :func:`histogram_free_energy` does).
    """
    return np.logical_and.reduce([(c >= lo) & (c < hi) for c, (lo, hi) in zip(cv.T, box)])


def basin_free_energies(
    cv: np.ndarray,
    boxes: dict[str, Sequence[tuple[float, float]]],
    log_weights: np.ndarray | None = None,
    n_blocks: int = 20,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> dict[str, dict]:
    """Absolute basin free energies ``−ln P(basin)`` [kT] with block-bootstrap standard errors.

    ``P(basin)`` is the (weighted) fraction of samples in the box; it does not depend on a histogram's
    bins. The blocks, replicates and seed are those of :func:`histogram_free_energy`.

    Parameters
    ----------
    cv
        ``(N, d)`` CV values, time-ordered, in the units of ``boxes``.
    boxes
        name -> ``d`` pairs ``(low, high)``: the half-open box ``low <= x < high`` (see :func:`in_box`);
        boxes must be disjoint.
    log_weights, n_blocks, n_bootstrap, seed
        As in :func:`histogram_free_energy`.

    Returns
    -------
    dict
        name -> ``{"sampled", "n_samples", "probability", "probability_stderr", "free_energy_kT",
        "stderr_kT", "note"}``. An unsampled basin (zero weight) has ``free_energy_kT`` ``None``; a
        basin left empty by some bootstrap replicates has ``stderr_kT`` ``None``; ``note`` says why.

    Raises
    ------
    BoltzclfError
        On bad samples or weights, a box of the wrong dimension, or overlapping boxes.
    """
    cv, weights = _check_inputs(cv, log_weights)
    _check_bootstrap(cv.shape[0], n_blocks, n_bootstrap)
    for name, box in boxes.items():
        if len(box) != cv.shape[1]:
            raise BoltzclfError(f"basin {name}: need {cv.shape[1]} (low, high) pairs, got {len(box)}")
    names = list(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if all(lo1 < hi2 and lo2 < hi1 for (lo1, hi1), (lo2, hi2) in zip(boxes[a], boxes[b])):
                raise BoltzclfError(f"basins {a} and {b} overlap")
    members = {name: in_box(cv, box) for name, box in boxes.items()}
    block = _block_labels(cv.shape[0], n_blocks)
    block_total = np.bincount(block, weights=weights, minlength=n_blocks)
    counts = _bootstrap_counts(n_blocks, n_bootstrap, seed)
    result = {}
    for name, inside in members.items():
        block_weight = np.bincount(block, weights=weights * inside, minlength=n_blocks)
        p = block_weight.sum() / block_total.sum()
        p_rep = (counts @ block_weight) / (counts @ block_total)
        entry = {"sampled": bool(p > 0), "n_samples": int(inside.sum()), "probability": float(p),
                 "probability_stderr": float(np.std(p_rep, ddof=1)), "free_energy_kT": None,
                 "stderr_kT": None, "note": None}
        empty = int(np.sum(p_rep == 0))
        if p == 0:
            entry["note"] = "not sampled: no samples (or only zero weights) in the basin"
        else:
            entry["free_energy_kT"] = float(-np.log(p))
            if empty:
                entry["note"] = (f"error n/a: the basin is empty in {empty} of {n_bootstrap} bootstrap "
                                 f"replicates (its samples lie in {np.count_nonzero(block_weight)} of "
                                 f"{n_blocks} blocks)")
            else:
                entry["stderr_kT"] = float(np.std(-np.log(p_rep), ddof=1))
        result[name] = entry
    return result
