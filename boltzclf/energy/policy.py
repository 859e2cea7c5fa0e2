"""Explicit handling of non-finite and huge reduced energies.

Three modes:

``report`` (default, the only one valid for reweighting)
    Energies are returned unchanged except that a non-finite energy becomes ``+inf`` (zero Boltzmann
    weight) with zero force. Every such sample, and every energy above ``huge``, is counted.
``cap`` (training losses only)
    Above ``cap`` the energy grows logarithmically, ``cap + log1p(u - cap)``, and the force is scaled
    by the derivative ``1 / (1 + u - cap)``; non-finite energies become ``cap + log1p(huge - cap)``
    with zero force. Every capped sample is counted.
``raise``
    Any non-finite energy or one above ``huge`` raises :class:`BoltzclfError` naming the batch indices.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from boltzclf.core.config import require
from boltzclf.core.errors import BoltzclfError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnergyPolicy:
    """How the bridge treats non-finite and huge reduced energies (thresholds in kT)."""

    mode: Literal["report", "cap", "raise"] = "report"
    cap: float = 1.0e4
    huge: float = 1.0e8

    def __post_init__(self) -> None:
        require(self.mode in ("report", "cap", "raise"), "energy policy mode", f"unknown {self.mode!r}")
        require(0 < self.cap < self.huge, "energy policy", "need 0 < cap < huge (kT)")


@dataclass
class EnergyStats:
    """Cumulative counts over every configuration a bridge evaluated."""

    evaluated: int = 0
    nonfinite: int = 0
    huge: int = 0
    capped: int = 0
    first_bad: list = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready counts plus the fraction of affected samples."""
        out = asdict(self)
        out["affected_fraction"] = (self.nonfinite + self.huge) / self.evaluated if self.evaluated else 0.0
        return out


def apply_policy(
    energy: np.ndarray, force: np.ndarray, policy: EnergyPolicy, stats: EnergyStats
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``policy`` to reduced energies ``(B,)`` [kT] and forces ``(B, n, 3)`` [kT/nm].

    Updates ``stats`` in place and returns new arrays (inputs are not modified).
    """
    energy = np.array(energy, dtype=np.float64)
    force = np.array(force, dtype=np.float64)
    bad_force = ~np.isfinite(force).all(axis=(1, 2))
    nonfinite = ~np.isfinite(energy) | bad_force
    huge = ~nonfinite & (energy > policy.huge)
    stats.evaluated += energy.shape[0]
    stats.nonfinite += int(nonfinite.sum())
    stats.huge += int(huge.sum())
    if nonfinite.any() or huge.any():
        bad = np.flatnonzero(nonfinite | huge)
        stats.first_bad = stats.first_bad or bad[:10].tolist()
        log.warning("%d of %d configurations have non-finite energies, %d exceed %.3g kT (policy %s)",
                    nonfinite.sum(), energy.shape[0], huge.sum(), policy.huge, policy.mode)
        if policy.mode == "raise":
            raise BoltzclfError(
                f"non-finite or huge (> {policy.huge:g} kT) energies at batch indices {bad[:10].tolist()}"
            )
    force[nonfinite] = 0.0
    if policy.mode == "cap":
        energy[nonfinite] = policy.huge
        over = energy > policy.cap
        stats.capped += int(over.sum())
        excess = energy[over] - policy.cap
        energy[over] = policy.cap + np.log1p(excess)
        force[over] /= (1.0 + excess)[:, None, None]
    else:
        energy[nonfinite] = np.inf
    return energy, force
