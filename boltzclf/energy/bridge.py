"""Bridges: batched reduced energies and forces behind one protocol, as a torch autograd function.

A *bridge* maps positions ``(B, n_atoms, 3)`` [nm] to reduced energies ``(B,)`` [kT] and forces
``(B, n_atoms, 3)`` [kT/nm]: it satisfies the :class:`~boltzclf.targets.protocol.EnergyTarget`
protocol plus ``stats`` and ``close()``. Backends compute in numpy float64 (:class:`NumpyEvaluator`)
and share the autograd glue here (:func:`reduced_energy`, :func:`reduced_force`).
:func:`make_bridge` picks a backend by name from a registry of import strings, so this module
imports no backend and no backend imports another: ``"openmm"`` (one OpenMM Context or a worker
pool) and ``"torch"`` (the torch-native force field).
"""
from __future__ import annotations

import importlib
from typing import Callable, Protocol

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from boltzclf.core.errors import BoltzclfError
from boltzclf.energy.policy import EnergyStats


class Bridge(Protocol):
    """What every backend provides (see module docstring for units)."""

    n_atoms: int
    stats: EnergyStats

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable reduced energy ``(B,)`` [kT] of ``x`` ``(B, n_atoms, 3)`` [nm]."""
        ...

    def force(self, x: torch.Tensor) -> torch.Tensor:
        """``-∇ energy`` ``(B, n_atoms, 3)`` [kT/nm]."""
        ...

    def close(self) -> None:
        ...


class NumpyEvaluator(Protocol):
    """A backend computing in numpy: reduced energies and forces of validated float64 positions."""

    n_atoms: int

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ...


#: Backend name -> ``"module:factory"``; ``factory(system, **options) -> Bridge`` for a
#: :class:`~boltzclf.openmm.system.MolecularSystem`. Imported only when a bridge is made.
_BACKENDS: dict[str, str | Callable[..., Bridge]] = {
    "openmm": "boltzclf.openmm.bridge:openmm_bridge",
    "torch": "boltzclf.forcefield.target:torch_bridge",
}


def register_backend(name: str, factory: str | Callable[..., Bridge]) -> None:
    """Make ``make_bridge(system, backend=name)`` call ``factory(system, **options)``.

    ``factory`` is a callable or a ``"module:attribute"`` import string resolved on first use.
    """
    _BACKENDS[name] = factory


def make_bridge(system, backend: str = "openmm", **options) -> Bridge:
    """A bridge for a :class:`~boltzclf.openmm.system.MolecularSystem` from the named backend.

    ``options`` go to the backend (for ``"openmm"``: ``workers``, ``platform``, ``policy``; for
    ``"torch"``: ``device``, ``dtype``, ``policy``, ``chunk_size``, ``compiled``).
    """
    if backend not in _BACKENDS:
        raise BoltzclfError(f"backend: unknown energy backend {backend!r}; available: {sorted(_BACKENDS)}")
    factory = _BACKENDS[backend]
    if isinstance(factory, str):
        module, attribute = factory.split(":")
        factory = getattr(importlib.import_module(module), attribute)
    return factory(system, **options)


def positions_array(x: torch.Tensor, n_atoms: int) -> np.ndarray:
    """``x`` as a float64 numpy array, after checking it is a finite ``(B, n_atoms, 3)`` tensor.

    The checks run in numpy on purpose: small torch element-wise ops wake torch's OpenMP pool, whose
    spinning threads then compete with the OpenMM workers for the same cores.

    Raises
    ------
    BoltzclfError
        For a wrong shape or non-finite coordinates (naming the batch entries).
    """
    if x.dim() != 3 or tuple(x.shape[1:]) != (n_atoms, 3):
        raise BoltzclfError(f"positions: expected shape (B, {n_atoms}, 3) in nm, got {tuple(x.shape)}")
    array = np.asarray(x.detach().cpu().numpy(), dtype=np.float64)
    finite = np.isfinite(array).all(axis=(1, 2))
    if not finite.all():
        bad = np.flatnonzero(~finite)[:10].tolist()
        raise BoltzclfError(f"positions: non-finite (NaN/inf) coordinates in batch entries {bad}")
    return array


def _like(array: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(array).to(device=x.device, dtype=x.dtype)


class _BridgeEnergy(torch.autograd.Function):
    """u(x) with backward −force · grad_output, the force coming from the backend (numpy inside)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bridge: NumpyEvaluator) -> torch.Tensor:
        energy, force = bridge.evaluate(positions_array(x, bridge.n_atoms))
        ctx.force = force
        return _like(energy, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        grad = np.asarray(grad_output.detach().cpu().numpy(), dtype=np.float64)
        return _like(-ctx.force * grad[:, None, None], grad_output), None


def reduced_energy(x: torch.Tensor, bridge: NumpyEvaluator) -> torch.Tensor:
    """Differentiable reduced energy ``(B,)`` [kT] of positions ``x`` ``(B, n_atoms, 3)`` [nm].

    The output has ``x``'s device and dtype (pass float64 when the energies feed reweighting).
    """
    return _BridgeEnergy.apply(x, bridge)


def reduced_force(x: torch.Tensor, bridge: NumpyEvaluator) -> torch.Tensor:
    """Force ``-∇u`` ``(B, n_atoms, 3)`` [kT/nm], same device and dtype as ``x``."""
    _, force = bridge.evaluate(positions_array(x, bridge.n_atoms))
    return _like(force, x)
