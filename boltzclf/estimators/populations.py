"""Conformational populations from CV arrays: ALDP basins, ΔF(φ > 0 vs φ < 0), chignolin's folded fraction.

Every quantity here is a weighted fraction of frames (or a log-ratio of two), with the error bar of
:mod:`boltzclf.estimators.correlated`: correct for time-correlated frames (blocks within each walker,
automatic block length), for independent walkers ``(n_walkers, n_frames)``, for importance-weighted
frames (``log_w``) and for resampled particles (``clusters`` = ancestor ids). Free energies are in kT;
:func:`boltzclf.estimators.estimate.free_energy_units` adds kJ/mol and kcal/mol for a temperature.

**Alanine dipeptide basins** (a convention of this package, stated here because published box
definitions differ from paper to paper). Angles are wrapped into [−180°, 180°) and the Ramachandran
torus is *partitioned*, so the four populations sum to 1 (``other`` is 0 for the default basins):

* ``alphaL``: φ ∈ [0°, 180°) — all of φ > 0, i.e. αL lumped with C7ax (they share the φ > 0 barrier
  region, and P(alphaL) is exactly the P(φ > 0) of :func:`phi_sign_free_energy`);
* ``alphaR``: φ ∈ [−180°, 0°), ψ ∈ [−120°, 30°);
* ``C5``: φ ∈ [−180°, −115°), ψ ∈ [30°, 180°) ∪ [−180°, −120°) (the extended β region);
* ``C7eq``: φ ∈ [−115°, 0°), ψ ∈ [30°, 180°) ∪ [−180°, −120°) — C7eq lumped with PII.

The φ = −115° and ψ = 30° boundaries are those of the Ramachandran boxes that ``boltzclf pmf`` reports
minima in (C5 / C7eq / αR); the minima of the CHARMM vacuum surface (C7eq ≈ (−78°, 90°),
C5 ≈ (−135°, 146°), C7ax ≈ (61°, −72°); Tobias & Brooks, J. Phys. Chem. 96, 3864 (1992)) lie inside
their boxes. Pass ``basins`` to use other boxes: each basin is a tuple of ``((φ_lo, φ_hi), (ψ_lo, ψ_hi))``
boxes in degrees, half-open ``[lo, hi)``; a frame gets the first basin whose box contains it, else
``other``.

**Chignolin (CLN025) folded fraction**: the weighted fraction of frames whose per-frame folding CV passes
a threshold — Cα RMSD to the native hairpin below ``CLN025_RMSD_FOLDED_NM`` (0.2 nm), or fraction of
native contacts Q (e.g. Best, Hummer & Eaton, PNAS 110, 17874 (2013)) above ``CLN025_Q_FOLDED`` (0.7).
Both thresholds are conventions of this package, not values taken from a publication: they are meant
to sit in the sparsely populated region between the folded peak (RMSD ≈ 0.1 nm, Q ≈ 0.9) and the
misfolded and unfolded states; check that against the CV's histogram, and report the threshold with
the fraction, which depends on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Optional, Sequence

import numpy as np
import torch

from boltzclf.estimators.correlated import (DEFAULT_BLOCK_FACTOR, correlated_fractions,
                                            two_state_free_energy)
from boltzclf.estimators.estimate import Estimate, EstimatorInputError
from boltzclf.estimators.importance import ArrayLike, as_float64

__all__ = ["ALDP_BASINS", "CLN025_Q_FOLDED", "CLN025_RMSD_FOLDED_NM", "Populations", "basin_labels",
           "basin_populations", "folded_fraction", "phi_sign_free_energy"]

Box = tuple[tuple[float, float], tuple[float, float]]

#: Alanine-dipeptide basins as boxes ((φ_lo, φ_hi), (ψ_lo, ψ_hi)) in degrees, half-open; a partition.
ALDP_BASINS: dict[str, tuple[Box, ...]] = {
    "C7eq": (((-115.0, 0.0), (30.0, 180.0)), ((-115.0, 0.0), (-180.0, -120.0))),
    "C5": (((-180.0, -115.0), (30.0, 180.0)), ((-180.0, -115.0), (-180.0, -120.0))),
    "alphaR": (((-180.0, 0.0), (-120.0, 30.0)),),
    "alphaL": (((0.0, 180.0), (-180.0, 180.0)),),
}

#: Chignolin folded if the Cα RMSD to the native structure is below this (nm); a package convention.
CLN025_RMSD_FOLDED_NM = 0.2
#: Chignolin folded if the fraction of native contacts is above this; a package convention.
CLN025_Q_FOLDED = 0.7


@dataclass(frozen=True, eq=False)
class Populations:
    """Named populations with error bars.

    Attributes
    ----------
    names
        Class names, ``K`` of them (the last is ``"other"``).
    estimate
        ``value``, ``se``: ``(K,)`` fractions (dimensionless) in the order of ``names``; ``n_eff`` and
        ``method`` as in :func:`boltzclf.estimators.correlated.correlated_fractions`.
    """

    names: tuple[str, ...]
    estimate: Estimate

    def as_dict(self) -> dict:
        """JSON-ready: ``{name: {"value", "se"}}`` plus ``n_eff`` and ``method``."""
        return {"populations": {n: {"value": float(v), "se": float(s)} for n, v, s in
                                zip(self.names, self.estimate.value, self.estimate.se)},
                "n_eff": float(self.estimate.n_eff), "method": self.estimate.method}


def _angles_deg(angle: ArrayLike, name: str) -> np.ndarray:
    a = as_float64(angle, name).cpu().numpy()
    if a.ndim not in (1, 2) or a.size == 0:
        raise EstimatorInputError(f"{name}: expected shape (n_frames,) or (n_walkers, n_frames), got {a.shape}")
    if not np.isfinite(a).all():
        raise EstimatorInputError(f"{name}: {int((~np.isfinite(a)).sum())} non-finite angles; not dropped silently")
    return (np.degrees(a) + 180.0) % 360.0 - 180.0


def basin_labels(phi: ArrayLike, psi: ArrayLike,
                 basins: Mapping[str, Sequence[Box]] = ALDP_BASINS) -> tuple[np.ndarray, tuple[str, ...]]:
    """Basin index of each frame from its backbone dihedrals.

    Parameters
    ----------
    phi, psi
        ``(n_frames,)`` or ``(n_walkers, n_frames)`` dihedrals in radians (any branch), same shape.
    basins
        name → boxes in degrees (see the module docstring); first match wins.

    Returns
    -------
    labels, names
        ``labels``: int64 array of the shape of ``phi``, index into ``names``; ``names``: the basin
        names in order, then ``"other"`` (frames in no box).
    """
    f, s = _angles_deg(phi, "phi"), _angles_deg(psi, "psi")
    if f.shape != s.shape:
        raise EstimatorInputError(f"phi, psi: shapes differ, {f.shape} and {s.shape}")
    names = tuple(basins) + ("other",)
    labels = np.full(f.shape, len(basins), dtype=np.int64)
    for k, boxes in reversed(list(enumerate(basins.values()))):  # reversed: the first match wins
        inside = np.zeros(f.shape, dtype=bool)
        for (f_lo, f_hi), (s_lo, s_hi) in boxes:
            inside |= (f >= f_lo) & (f < f_hi) & (s >= s_lo) & (s < s_hi)
        labels[inside] = k
    return labels, names


def basin_populations(phi: ArrayLike, psi: ArrayLike, log_w: Optional[ArrayLike] = None,
                      clusters: Optional[ArrayLike] = None, block_length: Optional[int] = None,
                      basins: Mapping[str, Sequence[Box]] = ALDP_BASINS,
                      block_factor: float = DEFAULT_BLOCK_FACTOR) -> Populations:
    """Populations of the alanine-dipeptide basins (or of ``basins``) with correlated-frame error bars.

    Parameters
    ----------
    phi, psi
        ``(n_frames,)`` or ``(n_walkers, n_frames)`` dihedrals in radians, frames in time order.
    log_w, clusters, block_length, block_factor
        As in :func:`boltzclf.estimators.correlated.correlated_fractions`.
    basins
        name → boxes in degrees; default :data:`ALDP_BASINS`.

    Returns
    -------
    Populations
        Fractions of each basin and of ``other``, summing to 1, with standard errors.
    """
    labels, names = basin_labels(phi, psi, basins)
    est = correlated_fractions(torch.from_numpy(labels), len(names), log_w, clusters, block_length,
                               block_factor)
    return Populations(names=names, estimate=est)


def phi_sign_free_energy(phi: ArrayLike, log_w: Optional[ArrayLike] = None,
                         clusters: Optional[ArrayLike] = None, block_length: Optional[int] = None,
                         block_factor: float = DEFAULT_BLOCK_FACTOR) -> Estimate:
    """``ΔF(φ > 0 vs φ < 0) = −ln(P(φ > 0) / P(φ < 0))`` in kT, with a correlated-frame error bar.

    Parameters
    ----------
    phi
        ``(n_frames,)`` or ``(n_walkers, n_frames)`` backbone φ in radians (any branch; wrapped into
        [−π, π), where φ = 0 counts as positive and φ = ±π as negative).
    log_w, clusters, block_length, block_factor
        As in :func:`boltzclf.estimators.correlated.correlated_fractions`.

    Returns
    -------
    Estimate
        0-d ΔF (kT; positive when φ > 0 is less populated), its standard error and ``n_eff``; see
        :func:`boltzclf.estimators.correlated.two_state_free_energy`.
    """
    positive = _angles_deg(phi, "phi") >= 0.0
    return two_state_free_energy(torch.from_numpy(positive), log_w, clusters, block_length, block_factor)


def folded_fraction(cv: ArrayLike, kind: Literal["rmsd", "q"] = "rmsd", threshold: Optional[float] = None,
                    log_w: Optional[ArrayLike] = None, clusters: Optional[ArrayLike] = None,
                    block_length: Optional[int] = None,
                    block_factor: float = DEFAULT_BLOCK_FACTOR) -> Estimate:
    """Folded fraction of a miniprotein (chignolin by default) from a per-frame folding CV.

    Parameters
    ----------
    cv
        ``(n_frames,)`` or ``(n_walkers, n_frames)`` CV per frame: Cα RMSD to the native structure in nm
        (``kind="rmsd"``, folded when ``cv < threshold``) or fraction of native contacts in [0, 1]
        (``kind="q"``, folded when ``cv > threshold``).
    kind
        ``"rmsd"`` or ``"q"``.
    threshold
        Folding threshold in the unit of ``cv``; ``None`` = :data:`CLN025_RMSD_FOLDED_NM` (0.2 nm) or
        :data:`CLN025_Q_FOLDED` (0.7).
    log_w, clusters, block_length, block_factor
        As in :func:`boltzclf.estimators.correlated.correlated_fractions`.

    Returns
    -------
    Estimate
        0-d folded fraction (dimensionless) with its standard error; ``method`` names the threshold.
    """
    x = as_float64(cv, "cv")
    if x.numel() == 0 or not torch.isfinite(x).all():
        raise EstimatorInputError("cv: expected a non-empty array of finite values")
    if kind == "rmsd":
        threshold = CLN025_RMSD_FOLDED_NM if threshold is None else float(threshold)
        folded, rule = x < threshold, f"folded = Cα RMSD < {threshold:g} nm"
    elif kind == "q":
        threshold = CLN025_Q_FOLDED if threshold is None else float(threshold)
        folded, rule = x > threshold, f"folded = Q > {threshold:g}"
    else:
        raise EstimatorInputError(f"kind: expected 'rmsd' or 'q', got {kind!r}")
    frac = correlated_fractions(folded.to(torch.int64), 2, log_w, clusters, block_length, block_factor)
    return Estimate(value=frac.value[1], se=frac.se[1], n_eff=frac.n_eff, method=f"{rule}; {frac.method}")
