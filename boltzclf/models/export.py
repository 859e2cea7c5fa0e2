"""The learned U_θ(t_min, ·) of a molecule as a TorchScript module in OpenMM's units.

:func:`openmm_energy_module` wraps a trained :class:`~boltzclf.models.energy.EnergyModel` so that it
maps positions ``(n_atoms, 3)`` [nm] to a scalar energy [kJ/mol] (kT × U_θ at the first level),
which is what openmm-torch's ``TorchForce`` calls; forces follow by autograd, so they are
−∇ of that energy. :func:`export_energy` traces it and saves the TorchScript file:

.. code-block:: python

    from openmmtorch import TorchForce
    system.addForce(TorchForce("energy.pt"))   # the learned potential of the model's atoms

For a coarse-grained model the OpenMM system holds the model's atoms only (in the model's order).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from boltzclf.core import atomic


class OpenMMEnergy(nn.Module):
    """U_θ(t_min, x) · kT: positions ``(n_atoms, 3)`` nm (any float dtype) → energy ``()`` kJ/mol.

    Parameters
    ----------
    model
        A trained molecular :class:`~boltzclf.models.energy.EnergyModel`.
    kt_kj_per_mol
        kT of the run's temperature in kJ/mol.
    """

    def __init__(self, model: nn.Module, kt_kj_per_mol: float):
        super().__init__()
        self.model = model
        parameter = next(model.parameters())
        self.register_buffer("t_min", model.levels[:1].to(parameter.dtype))
        self.register_buffer("kT", torch.tensor(kt_kj_per_mol, dtype=parameter.dtype))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        x = positions.to(self.kT.dtype)[None]
        return (self.model.energy(self.t_min, x)[0] * self.kT).to(positions.dtype)


def openmm_energy_module(model: nn.Module, kt_kj_per_mol: float, n_atoms: int) -> torch.jit.ScriptModule:
    """:class:`OpenMMEnergy` traced on CPU for ``n_atoms`` atoms (a TorchScript module)."""
    module = OpenMMEnergy(model.cpu().eval(), kt_kj_per_mol).eval()
    example = torch.zeros(n_atoms, 3, dtype=torch.float32)
    example[:, 0] = torch.arange(n_atoms, dtype=torch.float32) * 0.15  # distinct atoms (no zero distances)
    with torch.no_grad(), warnings.catch_warnings():
        # the networks branch on shapes only (one sample, one time, the molecule's dihedrals), which
        # are those of every call, so the tracer's warnings about them do not apply
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(module, example, check_trace=False)


def export_energy(model: nn.Module, kt_kj_per_mol: float, n_atoms: int, path: str | os.PathLike) -> Path:
    """Write the TorchScript module of :func:`openmm_energy_module` to ``path`` (atomically)."""
    traced = openmm_energy_module(model, kt_kj_per_mol, n_atoms)
    return atomic.save_with(path, lambda tmp: torch.jit.save(traced, tmp))
