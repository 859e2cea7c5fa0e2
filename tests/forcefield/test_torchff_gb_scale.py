"""λ-scaled generalized Born charges against OpenMM systems whose GB-force charges are scaled."""
from __future__ import annotations

import numpy as np
import openmm
import pytest
import torch

from boltzclf.core.errors import BoltzclfError
from boltzclf.forcefield import TorchForceField
from forcefield_testdata import aldp_prmtop_obc2, openmm_reference, perturbed

LAMBDAS = (0.0, 0.3, 0.7, 1.0)


def scaled_gb_system(system: openmm.System, lam: float) -> openmm.System:
    """A copy of ``system`` whose GB force (CustomGBForce or GBSAOBCForce) has charges × ``lam``."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for force in system.getForces():
        if isinstance(force, openmm.GBSAOBCForce):
            for i in range(force.getNumParticles()):
                charge, radius, scale = force.getParticleParameters(i)
                force.setParticleParameters(i, charge * lam, radius, scale)
        elif isinstance(force, openmm.CustomGBForce):
            for i in range(force.getNumParticles()):
                params = list(force.getParticleParameters(i))
                params[0] *= lam  # openmm.app and openmmtools put the charge first
                force.setParticleParameters(i, params)
    return system


def reference_energies(system: openmm.System, xs: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """OpenMM energies ``(B,)`` kJ/mol, configuration ``b`` evaluated at λ = ``lambdas[b]``."""
    out = np.empty(len(xs))
    for lam in np.unique(lambdas):
        rows = lambdas == lam
        out[rows] = openmm_reference(scaled_gb_system(system, float(lam)), xs[rows])["total"]
    return out


@pytest.mark.parametrize("name", ["aldp_implicit", "gbsaobc", "chignolin"])
def test_per_sample_lambda_matches_scaled_openmm_system(name, request):
    molecule = aldp_prmtop_obc2() if name == "gbsaobc" else request.getfixturevalue(name)
    xs = perturbed(molecule, 12, 0.01, seed=7)
    lambdas = np.resize(np.array(LAMBDAS), len(xs))
    energy = TorchForceField(molecule.system)(torch.tensor(xs), gb_scale=torch.tensor(lambdas))
    expected = reference_energies(molecule.system, xs, lambdas)
    np.testing.assert_allclose(energy.numpy(), expected, rtol=1e-5, atol=0)


def test_scalar_lambda_matches_and_changes_the_energy(aldp_implicit):
    xs = perturbed(aldp_implicit, 8, 0.01, seed=8)
    field = TorchForceField(aldp_implicit.system)
    x = torch.tensor(xs)
    energy = field(x, gb_scale=0.5)
    np.testing.assert_allclose(energy.numpy(), reference_energies(aldp_implicit.system, xs, np.full(8, 0.5)),
                               rtol=1e-5, atol=0)
    assert torch.all((energy - field(x)).abs() > 1.0)  # kJ/mol: λ really acts


def test_lambda_derivative_matches_openmm_finite_difference(aldp_implicit):
    xs = perturbed(aldp_implicit, 4, 0.01, seed=9)
    lam = torch.full((4,), 0.4, dtype=torch.float64, requires_grad=True)
    energy = TorchForceField(aldp_implicit.system)(torch.tensor(xs), gb_scale=lam)
    (derivative,) = torch.autograd.grad(energy.sum(), lam)
    h = 1e-4
    finite = (reference_energies(aldp_implicit.system, xs, np.full(4, 0.4 + h))
              - reference_energies(aldp_implicit.system, xs, np.full(4, 0.4 - h))) / (2 * h)
    np.testing.assert_allclose(derivative.numpy(), finite, rtol=1e-6)


def test_lambda_without_gb_force_is_an_error(aldp_vacuum):
    field = TorchForceField(aldp_vacuum.system)
    with pytest.raises(BoltzclfError, match="no generalized Born force"):
        field(torch.tensor(aldp_vacuum.positions[None]), gb_scale=0.5)


def test_lambda_with_wrong_shape_is_an_error(aldp_implicit):
    field = TorchForceField(aldp_implicit.system)
    with pytest.raises(BoltzclfError, match="gb_scale"):
        field(torch.tensor(aldp_implicit.positions[None]), gb_scale=torch.ones(3))
