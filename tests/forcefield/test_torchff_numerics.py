"""Precision, device, chunking and the exclusion-honouring CustomGBForce pair types."""
from __future__ import annotations

import numpy as np
import openmm
import pytest
import torch

from boltzclf.forcefield import TorchForceField
from boltzclf.forcefield.bonded import HarmonicAngles, HarmonicBonds, PeriodicTorsions
from boltzclf.forcefield.field import component_first
from boltzclf.forcefield.gather import AtomSelection
from boltzclf.forcefield.grid import pair_distances
from forcefield_testdata import openmm_reference, perturbed


def test_float32_is_close_to_float64_and_stays_float32(aldp_implicit):
    field = TorchForceField(aldp_implicit.system)
    x = torch.tensor(perturbed(aldp_implicit, 16, 0.01, seed=10))
    e64, f64 = field.energy_and_force(x)
    e32, f32 = field.energy_and_force(x.float())
    assert e32.dtype == f32.dtype == torch.float32
    np.testing.assert_allclose(e32.double().numpy(), e64.numpy(), rtol=1e-5)
    scale = f64.abs().amax(dim=(1, 2), keepdim=True)
    assert float(((f32.double() - f64).abs() / scale).max()) < 1e-4


def test_chunking_does_not_change_results(aldp_implicit):
    field = TorchForceField(aldp_implicit.system)
    x = torch.tensor(perturbed(aldp_implicit, 23, 0.01, seed=11))
    lam = torch.linspace(0, 1, 23, dtype=torch.float64)
    whole = field.energy_and_force(x, gb_scale=lam, chunk_size=1000)
    chunked = field.energy_and_force(x, gb_scale=lam, chunk_size=5)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9)


def test_forces_are_minus_the_gradient_of_the_differentiable_energy(aldp_implicit):
    field = TorchForceField(aldp_implicit.system)
    x = torch.tensor(perturbed(aldp_implicit, 4, 0.01, seed=12), requires_grad=True)
    (gradient,) = torch.autograd.grad(field(x).sum(), x)
    torch.testing.assert_close(field.energy_and_force(x)[1], -gradient)


@pytest.mark.gpu
def test_cuda_matches_cpu(aldp_implicit):
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device (run them with -m gpu on a GPU machine)"
    field = TorchForceField(aldp_implicit.system)
    x = torch.tensor(perturbed(aldp_implicit, 64, 0.01, seed=13))
    energy, force = field.energy_and_force(x.cuda(), gb_scale=0.5)
    assert energy.device.type == "cuda"
    expected = field.energy_and_force(x, gb_scale=0.5)
    torch.testing.assert_close(energy.cpu(), expected[0], rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(force.cpu(), expected[1], rtol=1e-10, atol=1e-8)


def test_custom_gb_pair_types_with_exclusions_match_openmm(aldp_implicit):
    """The app GB force rewritten with exclusion-honouring ParticlePair terms and bond exclusions."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(aldp_implicit.system))
    gb = next(f for f in system.getForces() if isinstance(f, openmm.CustomGBForce))
    for k in range(gb.getNumComputedValues()):
        name, expression, kind = gb.getComputedValueParameters(k)
        if kind != openmm.CustomGBForce.SingleParticle:
            gb.setComputedValueParameters(k, name, expression, openmm.CustomGBForce.ParticlePair)
    for k in range(gb.getNumEnergyTerms()):
        expression, kind = gb.getEnergyTermParameters(k)
        if kind != openmm.CustomGBForce.SingleParticle:
            gb.setEnergyTermParameters(k, expression, openmm.CustomGBForce.ParticlePair)
    for bond in aldp_implicit.topology.bonds():
        gb.addExclusion(bond[0].index, bond[1].index)
    xs = perturbed(aldp_implicit, 10, 0.01, seed=14)
    energy = TorchForceField(system)(torch.tensor(xs)).numpy()
    expected = openmm_reference(system, xs)["total"]
    np.testing.assert_allclose(energy, expected, rtol=1e-5)
    unexcluded = openmm_reference(aldp_implicit.system, xs)["total"]
    assert np.all(np.abs(expected - unexcluded) > 1.0)  # the exclusions matter


def test_atom_selection_accumulate_is_the_adjoint_of_select():
    atoms = np.array([[3, 1], [3, 0], [4, 3]])  # atom 3 three times, atom 2 never
    selection = AtomSelection(atoms, 5)
    generator = torch.Generator().manual_seed(18)
    xt = torch.randn(3, 5, 7, dtype=torch.float64, generator=generator).requires_grad_(True)
    weights = torch.randn(3, 3, 2, 7, dtype=torch.float64, generator=generator)
    plain = xt.index_select(1, torch.as_tensor(atoms.reshape(-1))).reshape(3, 3, 2, 7)
    expected = torch.autograd.grad((weights * plain).sum(), xt)[0]
    torch.testing.assert_close(selection.accumulate(list(weights.unbind(2))), expected)
    torch.testing.assert_close(torch.stack(selection.select(xt), dim=2), plain)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["bonds", "angles", "torsions"])
def test_analytic_bonded_gradients_match_finite_differences_to_second_order(aldp_vacuum, index):
    """gradcheck: the closed-form backward against finite differences; gradgradcheck: its own
    derivative (create_graph=True) likewise."""
    term = TorchForceField(aldp_vacuum.system).terms[index]
    assert isinstance(term, (HarmonicBonds, HarmonicAngles, PeriodicTorsions)[index])
    xt = component_first(torch.tensor(perturbed(aldp_vacuum, 3, 0.02, seed=15))).requires_grad_(True)
    assert torch.autograd.gradcheck(term, (xt,))
    assert torch.autograd.gradgradcheck(term, (xt,))


def test_pair_distance_gradients_match_finite_differences_to_second_order():
    generator = torch.Generator().manual_seed(17)
    xt = torch.randn(3, 6, 4, dtype=torch.float64, generator=generator).requires_grad_(True)
    # a function of all distances, asymmetric in i and j, with the diagonal masked out
    weights = torch.randn(6, 6, 1, dtype=torch.float64, generator=generator)
    weights = weights * (1 - torch.eye(6, dtype=torch.float64))[:, :, None]

    def loss(x: torch.Tensor) -> torch.Tensor:
        return (weights * pair_distances(x) ** 3).sum()

    assert torch.autograd.gradcheck(loss, (xt,))
    assert torch.autograd.gradgradcheck(loss, (xt,))
    separations = xt[:, :, None, :] - xt[:, None, :, :]
    expected = separations.norm(dim=0) + torch.eye(6, dtype=torch.float64)[:, :, None]
    torch.testing.assert_close(pair_distances(xt), expected)


def test_forces_without_terms_contribute_nothing():
    """Empty bond and torsion forces next to one angle: OpenMM's energies and forces."""
    system = openmm.System()
    for _ in range(3):
        system.addParticle(12.0)
    system.addForce(openmm.HarmonicBondForce())
    system.addForce(openmm.PeriodicTorsionForce())
    angles = openmm.HarmonicAngleForce()
    angles.addAngle(0, 1, 2, 1.9, 300.0)
    system.addForce(angles)
    xs = np.random.default_rng(16).normal(scale=0.15, size=(5, 3, 3))
    energy, force = TorchForceField(system).energy_and_force(torch.tensor(xs))
    expected = openmm_reference(system, xs)
    np.testing.assert_allclose(energy.numpy(), expected["total"], rtol=1e-10)
    np.testing.assert_allclose(force.numpy(), expected["forces"], rtol=1e-8, atol=1e-8)


@pytest.fixture
def two_threads():
    """Run with two torch threads: the multi-threaded compiled kernels are the ones that once broke."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_compiled_evaluation_matches_eager(aldp_implicit, two_threads):
    # 256 + 13 samples: one full compiled chunk (the shape at which torch 2.13's inductor once
    # produced wrong forces and heap corruption) and one padded one.
    field = TorchForceField(aldp_implicit.system)
    x = torch.tensor(perturbed(aldp_implicit, 269, 0.01, seed=15))
    lam = torch.linspace(0, 1, 269, dtype=torch.float64)
    eager = field.energy_and_force(x, gb_scale=lam, chunk_size=256)
    compiled = field.energy_and_force(x, gb_scale=lam, chunk_size=256, compiled=True)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-8)
