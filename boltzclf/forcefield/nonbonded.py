"""OpenMM's NonbondedForce without cutoff: Coulomb + Lennard-Jones over all pairs, with exceptions.

An exception replaces the pair's charge product, σ and ε (1-4 scaling, and zeroed exclusions).
Lorentz-Berthelot combining: ``σ = (σ_i + σ_j)/2``, ``ε = sqrt(ε_i ε_j)``.

The pairs are evaluated on the dense, symmetric grid of :func:`~boltzclf.forcefield.grid.pair_distances`
(the diagonal and excluded pairs have zero parameters), half of which is the energy. That is twice
the pairs of a pair list, but without index gathers, and its distances and their backward pass are
shared with the generalized Born terms (see :mod:`boltzclf.forcefield.grid` for the measurements).
"""
from __future__ import annotations

import numpy as np
import openmm
import torch
from torch import nn

from boltzclf.core.errors import BoltzclfError
from boltzclf.forcefield.grid import pair_distances

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


def pair_parameters(force: openmm.NonbondedForce) -> dict[str, np.ndarray]:
    """Parameters of every pair after combining rules and exceptions, as symmetric ``(N, N)`` matrices.

    Returns
    -------
    dict
        ``coulomb`` (charge product × 1/(4π ε0), kJ/mol·nm), ``sigma`` (nm) and ``four_epsilon``
        (4ε, kJ/mol); zero on the diagonal and wherever an exception zeroes the pair.
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
        qq[i, j] = qq[j, i] = chargeprod.value_in_unit(_E**2)
        ss[i, j] = ss[j, i] = sig.value_in_unit(_NM)
        ee[i, j] = ee[j, i] = eps.value_in_unit(_KJ)
    off_diagonal = ~np.eye(n, dtype=bool)
    return {"coulomb": ONE_4PI_EPS0 * qq * off_diagonal, "sigma": ss * off_diagonal,
            "four_epsilon": 4.0 * ee * off_diagonal}


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
        for name, matrix in pair_parameters(force).items():  # (N, N, 1): broadcast along the batch
            self.register_buffer(name, torch.as_tensor(matrix[:, :, None].copy()), persistent=False)

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        """Energy ``(B,)`` in kJ/mol of positions ``xt`` ``(3, n_atoms, B)`` in nm."""
        inv_r = 1.0 / pair_distances(xt)
        s2 = (self.sigma * inv_r) ** 2
        s6 = s2 * s2 * s2
        return 0.5 * (self.coulomb * inv_r + self.four_epsilon * (s6 * s6 - s6)).sum(1).sum(0)
