"""Unsupported systems and bad inputs give one clear BoltzclfError naming the culprit."""
from __future__ import annotations

import openmm
import pytest
import torch

from boltzclf.core.errors import BoltzclfError
from boltzclf.forcefield import TorchForceField


def with_force(system: openmm.System, force: openmm.Force) -> openmm.System:
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    system.addForce(force)
    return system


def test_unsupported_force_is_named(aldp_vacuum):
    system = with_force(aldp_vacuum.system, openmm.CustomExternalForce("x^2"))
    index = system.getNumForces() - 1
    with pytest.raises(BoltzclfError, match=f"force {index}:CustomExternalForce: CustomExternalForce is not "
                                            "supported"):
        TorchForceField(system)


def test_cmmotionremover_is_ignored(aldp_vacuum):
    field = TorchForceField(aldp_vacuum.system)
    assert "CMMotionRemover" in [type(f).__name__ for f in aldp_vacuum.system.getForces()]
    assert not any("CMMotionRemover" in label for label in field.labels)


@pytest.mark.parametrize("method, name", [(openmm.NonbondedForce.CutoffNonPeriodic, "CutoffNonPeriodic"),
                                          (openmm.NonbondedForce.PME, "PME")])
def test_cutoff_nonbonded_method_is_refused(aldp_vacuum, method, name):
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(aldp_vacuum.system))
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            force.setNonbondedMethod(method)
    expected = "periodic boundary" if method == openmm.NonbondedForce.PME else name
    with pytest.raises(BoltzclfError, match=expected):
        TorchForceField(system)


def test_gb_cutoff_is_refused(aldp_implicit):
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(aldp_implicit.system))
    for force in system.getForces():
        if isinstance(force, openmm.CustomGBForce):
            force.setNonbondedMethod(openmm.CustomGBForce.CutoffNonPeriodic)
    with pytest.raises(BoltzclfError, match="CustomGBForce: only NoCutoff"):
        TorchForceField(system)


def _one_particle_gb_system(energy: str, table=None) -> openmm.System:
    """A one-particle system whose CustomGBForce has the single-particle energy ``energy``."""
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomGBForce()
    force.addPerParticleParameter("q")
    if table is not None:
        force.addTabulatedFunction("table", table)
    force.addEnergyTerm(energy, openmm.CustomGBForce.SingleParticle)
    force.addParticle([0.5])
    system.addForce(force)
    return system


def test_continuous_tabulated_function_is_refused():
    system = _one_particle_gb_system("table(q)", openmm.Continuous1DFunction([0.0, 1.0, 2.0], 0.0, 1.0))
    with pytest.raises(BoltzclfError, match="Continuous1DFunction is not supported"):
        TorchForceField(system)


def test_unknown_variable_in_gb_expression_is_named():
    with pytest.raises(BoltzclfError, match="unknown variable.*bogus"):
        TorchForceField(_one_particle_gb_system("q*bogus"))


@pytest.mark.parametrize("shape", [(2, 21, 3), (22, 3), (2, 22, 2)])
def test_wrong_position_shape_is_an_error(aldp_vacuum, shape):
    with pytest.raises(BoltzclfError, match=r"shape \(B, 22, 3\)"):
        TorchForceField(aldp_vacuum.system)(torch.zeros(shape, dtype=torch.float64))
