"""Batched reduced energies and forces as a torch autograd function, with pluggable backends.

A *bridge* maps positions ``(B, n_atoms, 3)`` [nm] to reduced energies ``(B,)`` [kT] and forces
``(B, n_atoms, 3)`` [kT/nm], float64 inside. :func:`make_bridge` picks a backend by name; the OpenMM
backend is registered here and a torch-native force field can add itself with
:func:`register_backend` (factory signature ``factory(system, **options) -> bridge``), so callers never
depend on which one computes the energy.
"""
from __future__ import annotations

import logging
from typing import Callable, Protocol

import numpy as np
import openmm
import openmm.unit as unit
import torch
from torch.autograd.function import once_differentiable

from boltzclf.core.errors import BoltzclfError
from boltzclf.openmm.policy import EnergyPolicy, EnergyStats, apply_policy
from boltzclf.openmm.pool import ContextEvaluator, ContextPool

log = logging.getLogger(__name__)


class Bridge(Protocol):
    """What every backend provides (see module docstring for units)."""

    n_atoms: int
    stats: EnergyStats

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reduced energies ``(B,)`` and forces ``(B, n_atoms, 3)`` of validated float64 positions."""
        ...

    def close(self) -> None:
        ...


def kt_kj_per_mol(temperature: float) -> float:
    """kT in kJ/mol at ``temperature`` K."""
    return (unit.MOLAR_GAS_CONSTANT_R * temperature * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)


class OpenMMBridge:
    """Reduced energies from OpenMM, on one in-process Context (``workers=0``) or a worker pool.

    Parameters
    ----------
    system
        The OpenMM system.
    temperature
        K; defines kT.
    workers
        0 evaluates in this process; ``n >= 1`` uses ``n`` single-threaded worker processes.
    platform
        OpenMM platform name (``"CPU"`` suits small implicit-solvent systems; ``"CUDA"`` when present
        for large ones, then use ``workers <= 1``).
    policy
        Treatment of non-finite and huge energies (:class:`EnergyPolicy`).
    """

    def __init__(self, system: openmm.System, temperature: float, workers: int = 0,
                 platform: str = "CPU", policy: EnergyPolicy = EnergyPolicy()) -> None:
        self.n_atoms = system.getNumParticles()
        self.kT = kt_kj_per_mol(temperature)
        self.policy = policy
        self.stats = EnergyStats()
        self._engine = ContextPool(system, workers, platform) if workers else ContextEvaluator(system, platform)

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        energy, force = self._engine.evaluate(x)
        return apply_policy(energy / self.kT, force / self.kT, self.policy, self.stats)

    def close(self) -> None:
        self._engine.close()


_BACKENDS: dict[str, Callable[..., Bridge]] = {}


def register_backend(name: str, factory: Callable[..., Bridge]) -> None:
    """Make ``make_bridge(system, backend=name)`` call ``factory(system, **options)``."""
    _BACKENDS[name] = factory


def make_bridge(system, backend: str = "openmm", **options) -> Bridge:
    """A bridge for a :class:`~boltzclf.openmm.system.MolecularSystem` from the named backend.

    ``options`` go to the backend (for ``"openmm"``: ``workers``, ``platform``, ``policy``).
    """
    if backend == "torch" and backend not in _BACKENDS:
        try:  # the torch-native force field registers itself on import
            import boltzclf.forcefield  # noqa: F401
        except ImportError:
            pass
    if backend not in _BACKENDS:
        raise BoltzclfError(f"backend: unknown energy backend {backend!r}; available: {sorted(_BACKENDS)}")
    return _BACKENDS[backend](system, **options)


register_backend("openmm", lambda system, **opt: OpenMMBridge(system.system, system.temperature, **opt))


def check_positions(x: torch.Tensor, n_atoms: int) -> None:
    """Raise :class:`BoltzclfError` unless ``x`` is a finite ``(B, n_atoms, 3)`` tensor."""
    if x.dim() != 3 or tuple(x.shape[1:]) != (n_atoms, 3):
        raise BoltzclfError(f"positions: expected shape (B, {n_atoms}, 3) in nm, got {tuple(x.shape)}")
    finite = torch.isfinite(x).reshape(x.shape[0], -1).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()[:10].tolist()
        raise BoltzclfError(f"positions: non-finite (NaN/inf) coordinates in batch entries {bad}")


class _BridgeEnergy(torch.autograd.Function):
    """u(x) with backward −force · grad_output, the force coming from the backend."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bridge: Bridge) -> torch.Tensor:
        energy, force = bridge.evaluate(x.detach().to("cpu", torch.float64).numpy())
        ctx.save_for_backward(torch.from_numpy(force).to(device=x.device, dtype=x.dtype))
        return torch.from_numpy(energy).to(device=x.device, dtype=x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        (force,) = ctx.saved_tensors
        return -force * grad_output[:, None, None], None


def reduced_energy(x: torch.Tensor, bridge: Bridge) -> torch.Tensor:
    """Differentiable reduced energy ``(B,)`` [kT] of positions ``x`` ``(B, n_atoms, 3)`` [nm].

    The output has ``x``'s device and dtype (pass float64 when the energies feed reweighting).
    """
    check_positions(x, bridge.n_atoms)
    return _BridgeEnergy.apply(x, bridge)


def reduced_force(x: torch.Tensor, bridge: Bridge) -> torch.Tensor:
    """Force ``-∇u`` ``(B, n_atoms, 3)`` [kT/nm], same device and dtype as ``x``."""
    check_positions(x, bridge.n_atoms)
    _, force = bridge.evaluate(x.detach().to("cpu", torch.float64).numpy())
    return torch.from_numpy(force).to(device=x.device, dtype=x.dtype)
