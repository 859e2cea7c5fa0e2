"""Bonded terms of an OpenMM System as batched torch modules with analytic gradients.

Each module is built from one OpenMM force, stores its atom indices and parameters as buffers, and
maps positions in the force field's internal layout — component-first and batch-last, ``(3, n_atoms,
B)`` in nm (see :mod:`boltzclf.forcefield.field`) — to energies ``(B,)`` in kJ/mol. Each gives its
gradient in closed form as its autograd backward (:mod:`boltzclf.forcefield.analytic`).
"""
from __future__ import annotations

import numpy as np
import openmm
import torch

from boltzclf.forcefield.analytic import AnalyticTerm, Positions
from boltzclf.geometry import cross, dihedral, dihedral_of_normals, dot, norm

_NM, _RAD, _KJ = openmm.unit.nanometer, openmm.unit.radian, openmm.unit.kilojoule_per_mole


def _parameters(terms: list, columns: dict[str, tuple[int, object]]) -> dict[str, np.ndarray]:
    """``{name: (n_terms,)}`` of the entries ``terms[i][position]`` in ``unit`` (None: plain numbers)."""
    return {name: np.array([t[position] if unit is None else t[position].value_in_unit(unit)
                            for t in terms], float) for name, (position, unit) in columns.items()}


class HarmonicBonds(AnalyticTerm):
    """``E = Σ ½ k (r - r0)²`` over the bonds of a :class:`openmm.HarmonicBondForce`."""

    def __init__(self, force: openmm.HarmonicBondForce, n_atoms: int):
        terms = [force.getBondParameters(i) for i in range(force.getNumBonds())]
        atoms = np.array([t[:2] for t in terms], dtype=np.int64).reshape(-1, 2)
        super().__init__(atoms, n_atoms, **_parameters(terms, {"length": (2, _NM), "k": (3, _KJ / _NM**2)}))

    @staticmethod
    def energies(positions: Positions, length: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        first, second = positions
        r = norm(second - first)
        return 0.5 * k * (r - length) ** 2

    @staticmethod
    def gradients(positions: Positions, length: torch.Tensor, k: torch.Tensor) -> Positions:
        first, second = positions
        delta = second - first
        r = norm(delta)
        g = delta * (k * (r - length) / r)
        return -g, g


class HarmonicAngles(AnalyticTerm):
    """``E = Σ ½ k (θ - θ0)²`` over the angles of a :class:`openmm.HarmonicAngleForce`.

    With ``a``, ``b`` the vectors from the centre atom and ``n = a × b``:
    ``∂θ/∂a = a × n / (|a|² |n|)`` and ``∂θ/∂b = -b × n / (|b|² |n|)``.
    """

    def __init__(self, force: openmm.HarmonicAngleForce, n_atoms: int):
        terms = [force.getAngleParameters(i) for i in range(force.getNumAngles())]
        atoms = np.array([t[:3] for t in terms], dtype=np.int64).reshape(-1, 3)
        super().__init__(atoms, n_atoms, **_parameters(terms, {"theta0": (3, _RAD), "k": (4, _KJ / _RAD**2)}))

    @staticmethod
    def energies(positions: Positions, theta0: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        first, centre, third = positions
        a, b = first - centre, third - centre
        theta = torch.atan2(_sine_term(cross(a, b)), dot(a, b))
        return 0.5 * k * (theta - theta0) ** 2

    @staticmethod
    def gradients(positions: Positions, theta0: torch.Tensor, k: torch.Tensor) -> Positions:
        first, centre, third = positions
        a, b = first - centre, third - centre
        normal = cross(a, b)
        sine_term = _sine_term(normal)
        theta = torch.atan2(sine_term, dot(a, b))
        # exactly linear (normal = 0): the gradient's direction is undefined and both terms below carry
        # the factor normal = 0, so the force is 0 as in OpenMM; divide by 1 there instead of 0
        de_dtheta = k * (theta - theta0) / torch.where(sine_term > 0, sine_term, torch.ones_like(sine_term))
        g_first = cross(a, normal) * (de_dtheta / dot(a, a))
        g_third = -cross(b, normal) * (de_dtheta / dot(b, b))
        return g_first, -(g_first + g_third), g_third


def _sine_term(normal: torch.Tensor) -> torch.Tensor:
    """``|a × b| = |a| |b| sin θ`` from the normal ``a × b``, with a zero (not NaN) derivative where it is 0.

    ``sqrt`` has an infinite derivative at 0, which autograd turns into NaN for an exactly linear angle;
    there the value is taken as a constant 0 instead (θ then depends on ``a · b`` alone, whose
    derivative through ``atan2`` vanishes at sin θ = 0: zero force, as OpenMM gives).
    """
    squared = dot(normal, normal)
    linear = squared == 0
    root = torch.sqrt(torch.where(linear, torch.ones_like(squared), squared))
    return torch.where(linear, torch.zeros_like(squared), root)


class PeriodicTorsions(AnalyticTerm):
    """``E = Σ k (1 + cos(n φ − φ0))`` over the torsions of a :class:`openmm.PeriodicTorsionForce`.

    With bond vectors ``b0, b1, b2`` along the chain and normals ``n1 = b0 × b1``, ``n2 = b1 × b2``,
    the dihedral's gradients on the end atoms are ``∂φ/∂p0 = -|b1| n1 / |n1|²`` and
    ``∂φ/∂p3 = |b1| n2 / |n2|²``; with ``s = b0·b1 / |b1|²`` and ``t = b2·b1 / |b1|²``, the middle
    atoms get ``∂φ/∂p1 = t ∂φ/∂p3 − (1 + s) ∂φ/∂p0`` and ``∂φ/∂p2 = s ∂φ/∂p0 − (1 + t) ∂φ/∂p3``
    (Bekker's decomposition; the four sum to zero).
    """

    def __init__(self, force: openmm.PeriodicTorsionForce, n_atoms: int):
        terms = [force.getTorsionParameters(i) for i in range(force.getNumTorsions())]
        atoms = np.array([t[:4] for t in terms], dtype=np.int64).reshape(-1, 4)
        super().__init__(atoms, n_atoms, **_parameters(
            terms, {"periodicity": (4, None), "phase": (5, _RAD), "k": (6, _KJ)}))

    @staticmethod
    def energies(positions: Positions, periodicity: torch.Tensor, phase: torch.Tensor,
                 k: torch.Tensor) -> torch.Tensor:
        phi = dihedral(*positions, dim=0)
        return k * (1 + torch.cos(periodicity * phi - phase))

    @staticmethod
    def gradients(positions: Positions, periodicity: torch.Tensor, phase: torch.Tensor,
                  k: torch.Tensor) -> Positions:
        p0, p1, p2, p3 = positions
        b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
        n1 = cross(b0, b1)
        n2 = cross(b1, b2)
        b1_squared = dot(b1, b1)
        b1_length = torch.sqrt(b1_squared)
        phi = dihedral_of_normals(n1, n2, b1, b1_length)
        de_dphi = -k * periodicity * torch.sin(periodicity * phi - phase)
        g0 = n1 * (-de_dphi * b1_length / dot(n1, n1))
        g3 = n2 * (de_dphi * b1_length / dot(n2, n2))
        s = dot(b0, b1) / b1_squared
        t = dot(b2, b1) / b1_squared
        return g0, t * g3 - (1 + s) * g0, s * g0 - (1 + t) * g3, g3
