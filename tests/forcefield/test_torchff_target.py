"""The torch force field behind the EnergyTarget protocol and as the bridge's ``torch`` backend."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from boltzclf.forcefield import TorchEnergyTarget, TorchForceField, torch_target
from boltzclf.openmm import load_system
from boltzclf.targets.protocol import EnergyTarget
from forcefield_testdata import perturbed

SPEC = Path(__file__).resolve().parents[2] / "systems" / "alanine_dipeptide_implicit.yaml"


def test_torch_backend_matches_openmm_backend_in_reduced_units():
    openmm_system = load_system(SPEC, backend="openmm", platform="Reference")
    torch_system = load_system(SPEC, backend="torch", device="cpu")
    x = torch.tensor(perturbed(openmm_system, 32, 0.01, seed=20))
    reference_energy, reference_force = openmm_system.energy(x), openmm_system.force(x)
    np.testing.assert_allclose(torch_system.energy(x).numpy(), reference_energy.numpy(), rtol=1e-5)
    scale = reference_force.abs().amax(dim=(1, 2), keepdim=True)
    assert float(((torch_system.force(x) - reference_force).abs() / scale).max()) < 1e-5
    assert torch_system.bridge.stats.evaluated == 64


def test_energy_target_protocol_units_and_gradient(aldp_implicit):
    field = TorchForceField(aldp_implicit.system)
    target = TorchEnergyTarget(field, temperature=300.0)
    assert isinstance(target, EnergyTarget)
    assert target.event_shape == (22, 3)
    x = torch.tensor(perturbed(aldp_implicit, 6, 0.01, seed=21), requires_grad=True)
    energy = target.energy(x)
    torch.testing.assert_close(energy * target.kT, field(x))
    (gradient,) = torch.autograd.grad(energy.sum(), x)
    torch.testing.assert_close(target.force(x), -gradient)
    with torch.no_grad():
        torch.testing.assert_close(target.energy(x), energy.detach())


def test_torch_target_from_loaded_system_follows_input_dtype():
    system = load_system(SPEC)
    target = torch_target(system, gb_scale=0.5)
    x = torch.tensor(system.positions[None], dtype=torch.float32)
    assert target.energy(x).dtype == torch.float32
    assert target.force(x).shape == (1, 22, 3)
