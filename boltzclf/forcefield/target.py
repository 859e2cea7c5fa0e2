"""The torch force field as an energy target and as the ``torch`` backend of the energy bridge.

Two ways in, same units as the OpenMM bridge (reduced energies in kT, forces in kT/nm):

* :class:`TorchEnergyTarget` — the :class:`~boltzclf.targets.protocol.EnergyTarget` protocol natively
  in torch: follows the input's device and dtype and keeps the autograd graph (second derivatives,
  ∂u/∂λ). Build one from a loaded system with :func:`torch_target`.
* :class:`TorchBridge` — the ``Bridge`` interface of :mod:`boltzclf.energy.bridge` (numpy inside,
  shared autograd wrapper), made by :func:`torch_bridge` for the backend name ``"torch"``, so
  ``load_system(path, backend="torch")`` and every bridge user get it with the same energy policy
  (non-finite / huge energy handling) as the OpenMM backend.
"""
from __future__ import annotations

import numpy as np
import openmm
import torch

from boltzclf.core.device import resolve_device
from boltzclf.core.errors import BoltzclfError
from boltzclf.forcefield.field import TorchForceField
from boltzclf.energy.bridge import reduced_energy, reduced_force
from boltzclf.energy.policy import EnergyPolicy, EnergyStats, apply_policy
from boltzclf.energy.units import kt_kj_per_mol

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class TorchEnergyTarget:
    """Reduced energy ``u(x) = U(x)/kT`` of a :class:`TorchForceField`; an ``EnergyTarget``.

    Parameters
    ----------
    field
        The force field.
    temperature
        K; defines kT.
    gb_scale
        Optional GB charge scale λ (float or ``(B,)`` tensor) applied to every evaluation.
    chunk_size, compiled
        Passed to :meth:`TorchForceField.energy_and_force` for graph-free evaluations.
    """

    def __init__(self, field: TorchForceField, temperature: float,
                 gb_scale: torch.Tensor | float | None = None, chunk_size: int | None = None,
                 compiled: bool = False):
        self.field = field
        self.temperature = temperature
        self.kT = kt_kj_per_mol(temperature)
        self.gb_scale = gb_scale
        self.chunk_size = chunk_size
        self.compiled = compiled
        self.event_shape = (field.n_atoms, 3)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Reduced energy ``(B,)`` in kT of ``x`` ``(B, N, 3)`` in nm.

        Differentiable when autograd is recording and ``x`` requires grad; otherwise evaluated in
        memory-bounded chunks without a graph.
        """
        if torch.is_grad_enabled() and x.requires_grad:
            return self.field(x, self.gb_scale, self.chunk_size) / self.kT
        return self.energy_and_force(x)[0]

    def force(self, x: torch.Tensor) -> torch.Tensor:
        """``-∇ₓu`` ``(B, N, 3)`` in kT/nm."""
        return self.energy_and_force(x)[1]

    def energy_and_force(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduced energies ``(B,)`` [kT] and forces ``(B, N, 3)`` [kT/nm] in one pass, no graph."""
        energy, force = self.field.energy_and_force(x, self.gb_scale, self.chunk_size, self.compiled)
        return energy / self.kT, force / self.kT


def torch_target(system, gb_scale: torch.Tensor | float | None = None, **options) -> TorchEnergyTarget:
    """A :class:`TorchEnergyTarget` for a loaded :class:`~boltzclf.openmm.MolecularSystem`.

    ``options`` (``chunk_size``, ``compiled``) go to :class:`TorchEnergyTarget`. Refused for
    constrained systems (:meth:`~boltzclf.openmm.system.MolecularSystem.refuse_constraints`).
    """
    system.refuse_constraints("an energy target (reweighting, SMC, Langevin)")
    return TorchEnergyTarget(TorchForceField(system.system), system.temperature, gb_scale, **options)


class TorchBridge:
    """The ``Bridge`` interface over the torch force field (numpy float64 in and out).

    Parameters
    ----------
    system
        The OpenMM system.
    temperature
        K; defines kT.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
    dtype
        ``"float64"`` (default, reference accuracy) or ``"float32"``.
    policy
        Treatment of non-finite and huge energies, as for the OpenMM backend.
    chunk_size, compiled
        See :meth:`TorchForceField.energy_and_force`.
    """

    def __init__(self, system: openmm.System, temperature: float, device: str = "auto",
                 dtype: str = "float64", policy: EnergyPolicy = EnergyPolicy(),
                 chunk_size: int | None = None, compiled: bool = False):
        if dtype not in _DTYPES:
            raise BoltzclfError(f"dtype: {dtype!r} is not one of {sorted(_DTYPES)}")
        self.device = resolve_device(device)
        self.dtype = _DTYPES[dtype]
        self.field = TorchForceField(system).to(device=self.device, dtype=self.dtype)
        self.n_atoms = self.field.n_atoms
        self.kT = kt_kj_per_mol(temperature)
        self.policy = policy
        self.stats = EnergyStats()
        self.chunk_size = chunk_size
        self.compiled = compiled

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reduced energies ``(B,)`` [kT] and forces ``(B, N, 3)`` [kT/nm] of positions ``x`` [nm]."""
        positions = torch.as_tensor(x, device=self.device, dtype=self.dtype)
        energy, force = self.field.energy_and_force(positions, chunk_size=self.chunk_size,
                                                    compiled=self.compiled)
        energy = energy.to("cpu", torch.float64).numpy() / self.kT
        force = force.to("cpu", torch.float64).numpy() / self.kT
        return apply_policy(energy, force, self.policy, self.stats)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable reduced energy ``(B,)`` [kT] (policy applied; backward uses the forces)."""
        return reduced_energy(x, self)

    def force(self, x: torch.Tensor) -> torch.Tensor:
        """``-∇u`` ``(B, N, 3)`` [kT/nm] (policy applied)."""
        return reduced_force(x, self)

    def close(self) -> None:
        """Nothing to release (present for the ``Bridge`` interface)."""


def torch_bridge(system, **options) -> TorchBridge:
    """A :class:`TorchBridge` for a :class:`~boltzclf.openmm.system.MolecularSystem` at its temperature
    (the ``"torch"`` backend of :func:`boltzclf.energy.bridge.make_bridge`)."""
    return TorchBridge(system.system, system.temperature, **options)
