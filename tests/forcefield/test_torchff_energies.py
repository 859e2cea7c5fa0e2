"""Energies and forces of the torch force field against OpenMM's Reference platform (float64)."""
from __future__ import annotations

import numpy as np
import openmm
import pytest
import torch

from boltzclf.forcefield import TorchForceField
from forcefield_testdata import aldp_prmtop_obc2, aldp_with, chignolin_gbn2, md_frames, openmm_reference, perturbed

RTOL = 1e-5


def max_relative(value: np.ndarray, reference: np.ndarray) -> float:
    """Largest ``|value - reference| / |reference|`` over the batch."""
    return float(np.max(np.abs(value - reference) / np.abs(reference)))


def max_force_relative(force: np.ndarray, reference: np.ndarray) -> float:
    """Largest per-configuration ``max|ΔF| / max|F_ref|`` (components, kJ/mol/nm)."""
    scale = np.abs(reference).reshape(len(reference), -1).max(axis=1)
    return float(np.max(np.abs(force - reference).reshape(len(reference), -1).max(axis=1) / scale))


#: Where the float64 checks run: CPU always, CUDA with ``-m gpu`` on a GPU machine.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def check_against_openmm(molecule, xs: np.ndarray, device: str = "cpu", compiled: bool = False) -> None:
    """Per-force energies (eager), total energies and forces (eager or compiled) within ``RTOL``."""
    field = TorchForceField(molecule.system)
    reference = openmm_reference(molecule.system, xs)
    x = torch.tensor(xs, dtype=torch.float64, device=device)
    for label, energy in field.force_energies(x).items():
        index = int(label.split(":")[0])
        assert max_relative(energy.cpu().numpy(), reference["per_force"][index]) <= RTOL, label
    energy, force = field.energy_and_force(x, compiled=compiled)
    assert energy.device == force.device == x.device
    assert max_relative(energy.cpu().numpy(), reference["total"]) <= RTOL
    assert max_force_relative(force.cpu().numpy(), reference["forces"]) <= RTOL


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["aldp_vacuum", "aldp_implicit", "chignolin"])
def test_perturbed_configurations_match_openmm(name, device, request):
    molecule = request.getfixturevalue(name)
    xs = np.concatenate([perturbed(molecule, 50, 0.005, seed=1), perturbed(molecule, 50, 0.02, seed=2)])
    check_against_openmm(molecule, xs, device)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["aldp_implicit", "chignolin"])
def test_compiled_cuda_evaluation_matches_openmm(name, request):
    molecule = request.getfixturevalue(name)
    check_against_openmm(molecule, perturbed(molecule, 100, 0.01, seed=6), "cuda", compiled=True)


@pytest.mark.parametrize("name", ["aldp_vacuum", "aldp_implicit"])
def test_md_configurations_match_openmm(name, request):
    molecule = request.getfixturevalue(name)
    check_against_openmm(molecule, md_frames(molecule, 100, every=20, seed=3))


def test_chignolin_md_configurations_match_openmm(chignolin):
    check_against_openmm(chignolin, md_frames(chignolin, 100, every=10, seed=4))


@pytest.mark.parametrize("implicit_xml", ["hct.xml", "obc1.xml", "obc2.xml", "gbn.xml", "gbn2.xml"])
def test_every_openmm_app_gb_model_matches(implicit_xml):
    molecule = aldp_with(implicit_xml)
    check_against_openmm(molecule, perturbed(molecule, 20, 0.01, seed=5))


def test_chignolin_with_gbn2_neck_tables_matches():
    molecule = chignolin_gbn2()
    check_against_openmm(molecule, perturbed(molecule, 20, 0.01, seed=7))


def test_native_gbsaobcforce_matches():
    molecule = aldp_prmtop_obc2()
    assert any(type(f).__name__ == "GBSAOBCForce" for f in molecule.system.getForces())
    check_against_openmm(molecule, perturbed(molecule, 20, 0.01, seed=6))


def test_force_group_energies_match_openmm_groups(aldp_implicit):
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(aldp_implicit.system))
    for force in system.getForces():  # bonded terms in group 1, nonbonded + GB in group 2
        force.setForceGroup(2 if "Nonbonded" in type(force).__name__ or "GB" in type(force).__name__ else 1)
    xs = perturbed(aldp_implicit, 8, 0.01, seed=8)
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    groups = TorchForceField(system).group_energies(torch.tensor(xs))
    assert set(groups) == {1, 2}
    for group, energy in groups.items():
        expected = []
        for x in xs:
            context.setPositions(x)
            expected.append(context.getState(getEnergy=True, groups={group}).getPotentialEnergy()._value)
        np.testing.assert_allclose(energy.numpy(), expected, rtol=RTOL)


def test_gbsaobcforce_atom_inside_a_scaled_sphere_matches():
    """Atom 0 lies inside atom 1's scaled sphere, where the native kernel adds its extra term."""
    system = openmm.System()
    force = openmm.GBSAOBCForce()
    for charge, radius, scale in [(0.5, 0.1, 0.8), (-0.3, 0.3, 1.0), (0.2, 0.15, 0.85)]:
        system.addParticle(1.0)
        force.addParticle(charge, radius, scale)
    system.addForce(force)
    xs = np.array([[[0, 0, 0], [0.05, 0, 0], [0.6, 0.1, 0]], [[0, 0, 0], [0.02, 0.03, 0], [0.3, 0.1, 0.1]]])
    reference = openmm_reference(system, xs)
    energy, forces = TorchForceField(system).energy_and_force(torch.tensor(xs))
    assert max_relative(energy.numpy(), reference["total"]) <= RTOL
    assert max_force_relative(forces.numpy(), reference["forces"]) <= RTOL
