"""Batched reduced energies and forces as a torch autograd function, with pluggable backends.

A *bridge* maps positions ``(B, n_atoms, 3)`` [nm] to reduced energies ``(B,)`` [kT] and forces
``(B, n_atoms, 3)`` [kT/nm]: it satisfies the :class:`~boltzclf.targets.protocol.EnergyTarget`
protocol plus ``stats`` and ``close()``. :func:`make_bridge` picks a backend by name; the OpenMM
backend (numpy float64 inside, wrapped in a torch autograd function) is registered here, and a
torch-native force field can add itself with :func:`register_backend` (factory signature
``factory(system, **options) -> bridge``), so callers never depend on which one computes the energy.
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
        0 evaluates in this process; ``n >= 1`` uses ``n`` single-threaded worker processes
        (started with ``spawn``, so a script using them needs the usual
        ``if __name__ == "__main__":`` guard).
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
        """Reduced energies ``(B,)`` [kT] and forces [kT/nm] of float64 positions ``(B, n, 3)`` [nm]."""
        energy, force = self._engine.evaluate(x)
        return apply_policy(energy / self.kT, force / self.kT, self.policy, self.stats)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return reduced_energy(x, self)

    def force(self, x: torch.Tensor) -> torch.Tensor:
        return reduced_force(x, self)

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
