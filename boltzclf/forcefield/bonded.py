"""Bonded terms of an OpenMM System as batched torch modules.

Each module is built from one OpenMM force, stores its atom indices and parameters as buffers, and
maps positions in the force field's internal layout — component-first and batch-last, ``(3, n_atoms,
B)`` in nm (see :mod:`boltzclf.forcefield.field`) — to energies ``(B,)`` in kJ/mol (gradients by
autograd). Parameters are stored as ``(n_terms, 1)`` columns that broadcast along the batch.
Parameter buffers must share the positions' dtype and device (the force field moves them).
"""
from __future__ import annotations

import numpy as np
import openmm
import torch
from torch import nn

from boltzclf.forcefield.gather import AtomSelection


def _setup(module: nn.Module, atoms: np.ndarray, n_atoms: int, **parameters: np.ndarray) -> None:
    """Give ``module`` the selection of its terms' atoms ``(n_terms, k)`` and each parameter
    ``(n_terms,)`` as a ``(n_terms, 1)`` column buffer."""
    module.atoms = AtomSelection(atoms, n_atoms)
    for name, array in parameters.items():
        module.register_buffer(name, torch.as_tensor(array).reshape(-1, 1), persistent=False)


class HarmonicBonds(nn.Module):
    """``E = Σ ½ k (r - r0)²`` over the bonds of a :class:`openmm.HarmonicBondForce`."""

    def __init__(self, force: openmm.HarmonicBondForce, n_atoms: int):
        super().__init__()
        terms = [force.getBondParameters(i) for i in range(force.getNumBonds())]
        _setup(
            self,
            np.array([[t[0], t[1]] for t in terms], dtype=np.int64).reshape(-1, 2), n_atoms,
            length=np.array([t[2].value_in_unit(openmm.unit.nanometer) for t in terms], float),
            k=np.array([t[3].value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer**2)
                        for t in terms], float),
        )

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        """Energy ``(B,)`` in kJ/mol of positions ``xt`` ``(3, n_atoms, B)`` in nm."""
        first, second = self.atoms(xt)
        r = (second - first).norm(dim=0)
        return (0.5 * self.k * (r - self.length) ** 2).sum(0)


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle in radians between vectors ``a`` and ``b`` (components on axis 0), stable near 0 and π."""
    return torch.atan2(torch.linalg.cross(a, b, dim=0).norm(dim=0), (a * b).sum(0))


class HarmonicAngles(nn.Module):
    """``E = Σ ½ k (θ - θ0)²`` over the angles of a :class:`openmm.HarmonicAngleForce`."""

    def __init__(self, force: openmm.HarmonicAngleForce, n_atoms: int):
        super().__init__()
        terms = [force.getAngleParameters(i) for i in range(force.getNumAngles())]
        _setup(
            self,
            np.array([t[:3] for t in terms], dtype=np.int64).reshape(-1, 3), n_atoms,
            theta0=np.array([t[3].value_in_unit(openmm.unit.radian) for t in terms], float),
            k=np.array([t[4].value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.radian**2)
                        for t in terms], float),
        )

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        """Energy ``(B,)`` in kJ/mol of positions ``xt`` ``(3, n_atoms, B)`` in nm."""
        first, centre, third = self.atoms(xt)
        theta = _angle(first - centre, third - centre)
        return (0.5 * self.k * (theta - self.theta0) ** 2).sum(0)


def dihedral(p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, p3: torch.Tensor,
             dim: int = -1) -> torch.Tensor:
    """IUPAC dihedral angle in radians (−π, π] of the atom chains ``p0-p1-p2-p3``.

    The Cartesian components lie on axis ``dim`` of each input (``(..., 3)`` by default), which the
    result lacks. The convention (sign included) is OpenMM's: ``atan2`` of the normals' triple
    product and dot.
    """
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1 = torch.linalg.cross(b0, b1, dim=dim)
    n2 = torch.linalg.cross(b1, b2, dim=dim)
    y = (torch.linalg.cross(n1, n2, dim=dim) * b1).sum(dim) / b1.norm(dim=dim)
    return torch.atan2(y, (n1 * n2).sum(dim))


class PeriodicTorsions(nn.Module):
    """``E = Σ k (1 + cos(n φ − φ0))`` over the torsions of a :class:`openmm.PeriodicTorsionForce`."""

    def __init__(self, force: openmm.PeriodicTorsionForce, n_atoms: int):
        super().__init__()
        terms = [force.getTorsionParameters(i) for i in range(force.getNumTorsions())]
        _setup(
            self,
            np.array([t[:4] for t in terms], dtype=np.int64).reshape(-1, 4), n_atoms,
            periodicity=np.array([t[4] for t in terms], float),
            phase=np.array([t[5].value_in_unit(openmm.unit.radian) for t in terms], float),
            k=np.array([t[6].value_in_unit(openmm.unit.kilojoule_per_mole) for t in terms], float),
        )

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        """Energy ``(B,)`` in kJ/mol of positions ``xt`` ``(3, n_atoms, B)`` in nm."""
        phi = dihedral(*self.atoms(xt), dim=0)
        return (self.k * (1 + torch.cos(self.periodicity * phi - self.phase))).sum(0)
