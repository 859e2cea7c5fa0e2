"""Dot products, norms and cross products of batched 3-vectors, written out component by component.

The Cartesian components lie on axis ``dim`` (axis 0 in the force field's ``(3, n, B)`` layout).
Written as elementwise operations on the components, these are several times faster in eager mode
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
