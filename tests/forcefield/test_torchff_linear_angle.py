"""An exactly linear angle (θ0 = π, e.g. a nitrile or an alkyne) has zero force in OpenMM; the torch force field
must give the same finite numbers on both of its paths (analytic forces and autograd), not NaN."""
import numpy as np
import openmm
import pytest
import torch

from boltzclf.forcefield.field import TorchForceField


def _system(theta0: float) -> openmm.System:
    system = openmm.System()
    for _ in range(3):
        system.addParticle(12.0)
    angle = openmm.HarmonicAngleForce()
    angle.addAngle(0, 1, 2, theta0, 400.0)
    system.addForce(angle)
    return system


def _openmm(system: openmm.System, x: np.ndarray) -> tuple[float, np.ndarray]:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole),
            np.asarray(state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)))


@pytest.mark.parametrize("theta0", [np.pi, 2.0])
def test_exactly_linear_angle_matches_openmm_on_both_paths(theta0):
    system = _system(theta0)
    x = np.array([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0], [0.3, 0.0, 0.0]])  # exactly collinear
    energy, forces = _openmm(system, x)
    field = TorchForceField(system)
    positions = torch.tensor(x[None], dtype=torch.float64)
    e, f = field.energy_and_force(positions)
    assert torch.isfinite(f).all() and float(e[0]) == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(f[0].numpy(), forces, atol=1e-9)
    positions.requires_grad_(True)
    (gradient,) = torch.autograd.grad(field(positions).sum(), positions)
    assert torch.isfinite(gradient).all()
    np.testing.assert_allclose(-gradient[0].numpy(), forces, atol=1e-9)


def test_nearly_linear_angle_keeps_its_force():
    """Away from exact collinearity nothing changes: the force still pulls back towards θ0."""
    system = _system(2.0)
    x = np.array([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0], [0.3, 1e-4, 0.0]])
    energy, forces = _openmm(system, x)
    e, f = TorchForceField(system).energy_and_force(torch.tensor(x[None], dtype=torch.float64))
    assert float(e[0]) == pytest.approx(energy, rel=1e-9)
    np.testing.assert_allclose(f[0].numpy(), forces, rtol=1e-7, atol=1e-6)
    assert np.abs(forces).max() > 1.0
