"""Systems and OpenMM reference evaluations shared by the torch force-field tests.

References come from OpenMM's Reference platform (double precision), with every force in its own
force group so per-force energies can be compared.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

SYSTEMS = Path(__file__).resolve().parents[2] / "systems"


@dataclass
class Molecule:
    """An OpenMM system with reference positions ``(N, 3)`` in nm and its topology."""

    system: openmm.System
    positions: np.ndarray
    topology: app.Topology


def _copy(system: openmm.System) -> openmm.System:
    return openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))


def openmm_reference(system: openmm.System, xs: np.ndarray) -> dict:
    """Total energies ``(B,)`` and forces ``(B, N, 3)``, and per-force energies keyed by force index.

    Units: kJ/mol and kJ/mol/nm.
    """
    system = _copy(system)
    for index, force in enumerate(system.getForces()):
        force.setForceGroup(index)
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3),
                             openmm.Platform.getPlatformByName("Reference"))
    totals, forces, per_force = [], [], []
    for x in xs:
        context.setPositions(x)
        state = context.getState(getEnergy=True, getForces=True)
        totals.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        per_force.append([context.getState(getEnergy=True, groups={i}).getPotentialEnergy()
                          .value_in_unit(unit.kilojoule_per_mole) for i in range(system.getNumForces())])
    per_force = np.array(per_force)
    return {"total": np.array(totals), "forces": np.array(forces),
            "per_force": {i: per_force[:, i] for i in range(system.getNumForces())}}


def perturbed(molecule: Molecule, n: int, sigma: float, seed: int) -> np.ndarray:
    """``n`` configurations ``(n, N, 3)`` nm: reference positions plus Gaussian noise of ``sigma`` nm."""
    rng = np.random.default_rng(seed)
    return molecule.positions[None] + sigma * rng.standard_normal((n,) + molecule.positions.shape)


def md_frames(molecule: Molecule, n: int, every: int, seed: int) -> np.ndarray:
    """``n`` frames ``(n, N, 3)`` nm of 300 K Langevin dynamics (1 fs steps, CPU platform)."""
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(molecule.system, integrator, openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": "1"})
    context.setPositions(molecule.positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=200)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    frames = []
    for _ in range(n):
        integrator.step(every)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True)
                      .value_in_unit(unit.nanometer))
    return np.array(frames)


def openmmtools_system(name: str) -> Molecule:
    """An unconstrained ``openmmtools.testsystems`` system by class name, e.g. ``"AlanineDipeptideVacuum"``."""
    from openmmtools import testsystems

    test = getattr(testsystems, name)(constraints=None)
    return Molecule(test.system, np.asarray(test.positions.value_in_unit(unit.nanometer)), test.topology)


def aldp_with(implicit_xml: str) -> Molecule:
    """Alanine dipeptide under amber14 with an openmm.app implicit-solvent file, e.g. ``obc2.xml``."""
    base = openmmtools_system("AlanineDipeptideVacuum")
    forcefield = app.ForceField("amber14-all.xml", f"implicit/{implicit_xml}")
    system = forcefield.createSystem(base.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    return Molecule(system, base.positions, base.topology)


def aldp_prmtop_obc2() -> Molecule:
    """Alanine dipeptide from the Amber prmtop with ``implicitSolvent=OBC2``: a native GBSAOBCForce."""
    import os

    import openmmtools

    base = openmmtools_system("AlanineDipeptideVacuum")
    folder = os.path.join(os.path.dirname(openmmtools.__file__), "data", "alanine-dipeptide-gbsa")
    prmtop = app.AmberPrmtopFile(os.path.join(folder, "alanine-dipeptide.prmtop"))
    system = prmtop.createSystem(implicitSolvent=app.OBC2, constraints=None)
    return Molecule(system, base.positions, base.topology)


def chignolin_gbn2() -> Molecule:
    """The project's chignolin structure under amber14 + GBn2 (neck tables) instead of its OBC2."""
    pdb = app.PDBFile(str(SYSTEMS / "chignolin_cln025.pdb"))
    forcefield = app.ForceField("amber14-all.xml", "implicit/gbn2.xml")
    system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    positions = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return Molecule(system, np.asarray(positions), pdb.topology)


def project_system(name: str) -> Molecule:
    """A system of the project's ``systems/`` directory, built by :func:`boltzclf.openmm.load_system`."""
    from boltzclf.openmm import load_system

    loaded = load_system(SYSTEMS / f"{name}.yaml")
    return Molecule(loaded.system, loaded.positions, loaded.topology)
