"""The one small protocol through which samplers and estimators see any energy.

OpenMM-backed energies, the torch force field, analytic mixtures and learned energies at a fixed time
all satisfy it, so they are interchangeable.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class EnergyTarget(Protocol):
    """A reduced energy u(x) = U(x)/kT, batched.

    Shapes: ``x`` is ``(B, *event_shape)`` (``(B, D)`` flat or ``(B, n_atoms, 3)`` in nm);
    ``energy(x)`` is ``(B,)`` in kT; ``force(x) = -∇ₓ u`` has the shape of ``x`` (kT/nm for
    molecules). Outputs follow the input's device and dtype.
    """

    event_shape: tuple[int, ...]

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Reduced energy in kT, shape ``(B,)``."""
        ...

    def force(self, x: torch.Tensor) -> torch.Tensor:
        """``-∇ₓ energy``, shape like ``x``."""
        ...
