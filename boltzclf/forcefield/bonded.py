"""Bonded terms of an OpenMM System as batched torch modules.

Each module is built from one OpenMM force, stores its atom indices and parameters as buffers, and
maps positions ``(B, n_atoms, 3)`` in nm to energies ``(B,)`` in kJ/mol (gradients by autograd).
Parameter buffers must share the positions' dtype and device (the force field moves them).
"""
from __future__ import annotations

import numpy as np
import openmm
import torch
from torch import nn


def _buffers(module: nn.Module, **arrays: np.ndarray) -> None:
    for name, array in arrays.items():
        module.register_buffer(name, torch.as_tensor(array), persistent=False)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Positions of the atoms in ``index`` ``(n_terms,)``: ``(B, n_terms, 3)``."""
    return x.index_select(1, index)


class HarmonicBonds(nn.Module):
    """``E = Σ ½ k (r - r0)²`` over the bonds of a :class:`openmm.HarmonicBondForce`."""

    def __init__(self, force: openmm.HarmonicBondForce):
        super().__init__()
        terms = [force.getBondParameters(i) for i in range(force.getNumBonds())]
        _buffers(
            self,
            atoms=np.array([[t[0], t[1]] for t in terms], dtype=np.int64).reshape(-1, 2),
            length=np.array([t[2].value_in_unit(openmm.unit.nanometer) for t in terms], float),
            k=np.array([t[3].value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer**2)
                        for t in terms], float),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Energy ``(B,)`` in kJ/mol of positions ``x`` ``(B, n_atoms, 3)`` in nm."""
        r = (_gather(x, self.atoms[:, 1]) - _gather(x, self.atoms[:, 0])).norm(dim=-1)
        return (0.5 * self.k * (r - self.length) ** 2).sum(-1)


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle in radians between vectors ``a`` and ``b`` (last axis), stable near 0 and π."""
    return torch.atan2(torch.linalg.cross(a, b).norm(dim=-1), (a * b).sum(-1))


class HarmonicAngles(nn.Module):
    """``E = Σ ½ k (θ - θ0)²`` over the angles of a :class:`openmm.HarmonicAngleForce`."""

    def __init__(self, force: openmm.HarmonicAngleForce):
        super().__init__()
        terms = [force.getAngleParameters(i) for i in range(force.getNumAngles())]
        _buffers(
            self,
            atoms=np.array([t[:3] for t in terms], dtype=np.int64).reshape(-1, 3),
            theta0=np.array([t[3].value_in_unit(openmm.unit.radian) for t in terms], float),
            k=np.array([t[4].value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.radian**2)
                        for t in terms], float),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Energy ``(B,)`` in kJ/mol of positions ``x`` ``(B, n_atoms, 3)`` in nm."""
        centre = _gather(x, self.atoms[:, 1])
        theta = _angle(_gather(x, self.atoms[:, 0]) - centre, _gather(x, self.atoms[:, 2]) - centre)
        return (0.5 * self.k * (theta - self.theta0) ** 2).sum(-1)


def dihedral(p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, p3: torch.Tensor) -> torch.Tensor:
    """IUPAC dihedral angle in radians (−π, π] of the atom chains ``p0-p1-p2-p3`` (``(..., 3)`` each).

    The convention (sign included) is OpenMM's: ``atan2`` of the normals' triple product and dot.
    """
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1 = torch.linalg.cross(b0, b1)
    n2 = torch.linalg.cross(b1, b2)
    y = (torch.linalg.cross(n1, n2) * b1).sum(-1) / b1.norm(dim=-1)
    return torch.atan2(y, (n1 * n2).sum(-1))


class PeriodicTorsions(nn.Module):
    """``E = Σ k (1 + cos(n φ − φ0))`` over the torsions of a :class:`openmm.PeriodicTorsionForce`."""

    def __init__(self, force: openmm.PeriodicTorsionForce):
        super().__init__()
        terms = [force.getTorsionParameters(i) for i in range(force.getNumTorsions())]
        _buffers(
            self,
            atoms=np.array([t[:4] for t in terms], dtype=np.int64).reshape(-1, 4),
            periodicity=np.array([t[4] for t in terms], float),
            phase=np.array([t[5].value_in_unit(openmm.unit.radian) for t in terms], float),
            k=np.array([t[6].value_in_unit(openmm.unit.kilojoule_per_mole) for t in terms], float),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Energy ``(B,)`` in kJ/mol of positions ``x`` ``(B, n_atoms, 3)`` in nm."""
        phi = dihedral(*(_gather(x, self.atoms[:, i]) for i in range(4)))
        return (self.k * (1 + torch.cos(self.periodicity * phi - self.phase))).sum(-1)
