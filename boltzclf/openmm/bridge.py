"""The ``"openmm"`` energy backend: reduced energies and forces from OpenMM Contexts.

Satisfies :class:`boltzclf.energy.bridge.Bridge`; :func:`openmm_bridge` is the factory that
:func:`boltzclf.energy.bridge.make_bridge` imports by name.
"""
from __future__ import annotations

import numpy as np
import openmm
import torch

from boltzclf.energy.bridge import reduced_energy, reduced_force
from boltzclf.energy.policy import EnergyPolicy, EnergyStats, apply_policy
from boltzclf.energy.units import kt_kj_per_mol
from boltzclf.openmm.pool import ContextEvaluator, ContextPool


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


def openmm_bridge(system, **options) -> OpenMMBridge:
    """An :class:`OpenMMBridge` for a :class:`~boltzclf.openmm.system.MolecularSystem` at its temperature."""
    return OpenMMBridge(system.system, system.temperature, **options)
