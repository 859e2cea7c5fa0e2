"""Geometry of batched 3-vectors: dot and cross products, norms and dihedral angles.

Shared by the force field and the collective variables. The Cartesian components lie on axis
``dim`` (axis 0 in the force field's ``(3, n, B)`` layout). The products are written out component
by component:
as elementwise operations on the components they are several times faster in eager mode
than ``Tensor.norm(dim=0)`` and ``torch.linalg.cross(dim=0)``, whose kernels handle a short reduced
or leading axis poorly (float64, ``(3, 52, 1024)``, 2 CPU threads: norm 4.1 ms against 0.15 ms,
cross 1.5 ms against 0.55 ms); under ``torch.compile`` they are the same.
"""
from __future__ import annotations

import torch


def dot(a: torch.Tensor, b: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``a · b`` along ``dim`` (which the result lacks)."""
    ax, ay, az = a.unbind(dim)
    bx, by, bz = b.unbind(dim)
    return ax * bx + ay * by + az * bz


def norm(a: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``|a|`` along ``dim`` (which the result lacks)."""
    return torch.sqrt(dot(a, a, dim))


def cross(a: torch.Tensor, b: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``a × b`` with components on ``dim``."""
    ax, ay, az = a.unbind(dim)
    bx, by, bz = b.unbind(dim)
    return torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=dim)


def dihedral(p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, p3: torch.Tensor,
             dim: int = -1) -> torch.Tensor:
    """IUPAC dihedral angle in radians (−π, π] of the atom chains ``p0-p1-p2-p3``.

    The Cartesian components lie on axis ``dim`` of each input (``(..., 3)`` by default), which the
    result lacks. The convention (sign included) is OpenMM's and mdtraj's: ``atan2`` of the
    normals' triple product and dot.
    """
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    return dihedral_of_normals(cross(b0, b1, dim), cross(b1, b2, dim), b1, norm(b1, dim), dim)


def dihedral_of_normals(n1: torch.Tensor, n2: torch.Tensor, b1: torch.Tensor, b1_length: torch.Tensor,
                        dim: int = 0) -> torch.Tensor:
    """The dihedral from the normals ``n1 = b0 × b1`` and ``n2 = b1 × b2`` of the central bond ``b1``."""
    return torch.atan2(dot(cross(n1, n2, dim), b1, dim) / b1_length, dot(n1, n2, dim))
