"""OpenMM's NonbondedForce without cutoff: Coulomb + Lennard-Jones over all pairs, with exceptions.

Pairs are all ``i < j``; an exception replaces the pair's charge product, σ and ε (1-4 scaling, and
zeroed exclusions). Pairs whose charge product and ε are both zero are dropped, so exclusions cost
nothing. Lorentz-Berthelot combining: ``σ = (σ_i + σ_j)/2``, ``ε = sqrt(ε_i ε_j)``.
"""
from __future__ import annotations

import numpy as np
import openmm
import torch
from torch import nn

from boltzclf.core.errors import BoltzclfError
from boltzclf.forcefield.gather import AtomSelection
from boltzclf.forcefield.pairs import pair_distances, unordered_pairs

#: 1/(4π ε0) in kJ/mol·nm/e², the value OpenMM's kernels use.
ONE_4PI_EPS0 = 138.93545764438198

_NM = openmm.unit.nanometer
_KJ = openmm.unit.kilojoule_per_mole
_E = openmm.unit.elementary_charge


def _check_supported(force: openmm.NonbondedForce, label: str) -> None:
    if force.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
        names = {openmm.NonbondedForce.CutoffNonPeriodic: "CutoffNonPeriodic",
                 openmm.NonbondedForce.CutoffPeriodic: "CutoffPeriodic",
                 openmm.NonbondedForce.Ewald: "Ewald", openmm.NonbondedForce.PME: "PME",
                 openmm.NonbondedForce.LJPME: "LJPME"}
        method = names.get(force.getNonbondedMethod(), str(force.getNonbondedMethod()))
        raise BoltzclfError(
            f"{label}: nonbonded method {method} is not supported by the torch force field "
            "(only NoCutoff); use the OpenMM backend for cutoff or periodic systems"
        )
    if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
        raise BoltzclfError(f"{label}: parameter offsets are not supported by the torch force field")


def pair_parameters(force: openmm.NonbondedForce) -> tuple[np.ndarray, np.ndarray]:
    """Pairs and their parameters after combining rules and exceptions.

    Returns
    -------
    pairs
        int64 ``(n_pairs, 2)`` atom indices ``i < j`` of the interacting pairs.
    params
        float64 ``(n_pairs, 3)``: charge product (e²), σ (nm), ε (kJ/mol).
    """
    n = force.getNumParticles()
    particles = np.array([[p.value_in_unit(u) for p, u in zip(force.getParticleParameters(i),
                                                              (_E, _NM, _KJ))] for i in range(n)])
    q, sigma, epsilon = particles.T.reshape(3, n)
    qq = np.outer(q, q)
    ss = 0.5 * (sigma[:, None] + sigma[None, :])
    ee = np.sqrt(np.outer(epsilon, epsilon))
    for k in range(force.getNumExceptions()):
        i, j, chargeprod, sig, eps = force.getExceptionParameters(k)
        i, j = min(i, j), max(i, j)
        qq[i, j] = chargeprod.value_in_unit(_E**2)
        ss[i, j] = sig.value_in_unit(_NM)
        ee[i, j] = eps.value_in_unit(_KJ)
    pairs = unordered_pairs(n)
    params = np.stack([m[pairs[:, 0], pairs[:, 1]] for m in (qq, ss, ee)], axis=1)
    keep = (params[:, 0] != 0) | (params[:, 2] != 0)
    return pairs[keep], params[keep]


class Nonbonded(nn.Module):
    """Coulomb + Lennard-Jones energy of a :class:`openmm.NonbondedForce` with ``NoCutoff``.

    Parameters
    ----------
    force
        The OpenMM force.
    label
        How errors name the force, e.g. ``"force 3 (NonbondedForce)"``.

    Raises
    ------
    BoltzclfError
        For any method other than NoCutoff, or parameter offsets.
    """

    def __init__(self, force: openmm.NonbondedForce, label: str = "NonbondedForce"):
        super().__init__()
        _check_supported(force, label)
        pairs, params = pair_parameters(force)
        self.pairs = AtomSelection(pairs, force.getNumParticles())
        for name, column in (("coulomb", ONE_4PI_EPS0 * params[:, 0]), ("sigma", params[:, 1]),
                             ("four_epsilon", 4.0 * params[:, 2])):  # (n_pairs, 1): broadcast over B
            self.register_buffer(name, torch.as_tensor(column.reshape(-1, 1).copy()), persistent=False)

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        """Energy ``(B,)`` in kJ/mol of positions ``xt`` ``(3, n_atoms, B)`` in nm."""
        r = pair_distances(xt, self.pairs)
        inv_r = 1.0 / r
        s2 = (self.sigma * inv_r) ** 2
        s6 = s2 * s2 * s2
        return (self.coulomb * inv_r + self.four_epsilon * (s6 * s6 - s6)).sum(0)
