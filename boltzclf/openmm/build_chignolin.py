"""Build the all-atom CLN025 chignolin β-hairpin offline: ``python -m boltzclf.openmm.build_chignolin``.

Why CLN025 (YYDPETGTWY) rather than the original GYDPETGTWG: the two terminal Gly→Tyr mutations add
a cross-strand aromatic pair that raises the melting temperature from about 315 K to about 343 K
(Honda et al. 2008), so at the 300 K used throughout boltzclf the folded hairpin is the dominant state
(it is also the variant of the long DESRES folding simulations that most ML work compares against).

The backbone is placed by PeptideBuilder from the (φ, ψ) angles in :data:`BACKBONE` (degrees):
strands Y1–D3 and T8–Y10 in the β region (−130°, 140°), a helical type-I turn at P4–E5–T6, and G7 in
the left-handed (αL) region, the turn geometry reported for chignolin. The turn angles were chosen by
minimising the deviation of the D3–T8 and Y1–Y10 backbone N···O distances from 2.9 Å, so the
register-defining cross-strand hydrogen bonds exist before minimisation. Hydrogens are added with
OpenMM's Modeller at pH 7 (charged termini, Asp⁻, Glu⁻), then the structure is energy-minimised
with the force field of ``systems/chignolin_implicit.yaml``, first with the backbone restrained
(:data:`RESTRAINT_SCHEDULE`) so that side-chain clashes of the ideal build relax without unzipping the
hairpin. Because PeptideBuilder's side-chain rotamers do not pack (an unrelaxed build frayed within
50 ps of 300 K MD), 20 ps of Langevin dynamics at 300 K follow with only the register hydrogen bonds
(:data:`REGISTER`) held by flat-bottom restraints, then a final unrestrained minimisation; the result
is written as PDB.
"""
from __future__ import annotations

import argparse
import io
import logging
import random
from functools import partial
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from boltzclf.core import atomic

log = logging.getLogger(__name__)

SEQUENCE = "YYDPETGTWY"
FORCEFIELD = ("amber14-all.xml", "implicit/obc2.xml")
BETA = (-130.0, 140.0)
#: (φ, ψ) per residue in degrees; φ of residue 1 and ψ of residue 10 are not used by PeptideBuilder.
BACKBONE: tuple[tuple[float, float], ...] = (
    BETA, BETA, (BETA[0], 108.0),    # Y1 Y2 D3: strand
    (-65.0, -11.0),                  # P4: αR (proline φ)
    (-46.0, -47.0),                  # E5: αR
    (-102.0, -23.0),                 # T6: αR / bridge
    (105.0, 32.0),                   # G7: αL
    (-130.0, BETA[1]), BETA, BETA,   # T8 W9 Y10: strand
)
#: Backbone restraint strengths [kJ/mol/nm²] of successive minimisations: side chains relax around
#: the built backbone first, then everything relaxes freely.
RESTRAINT_SCHEDULE = (1.0e4, 1.0e3, 0.0)
#: Seed of the random hydrogen placement and of the relaxation dynamics (reproducible builds).
HYDROGEN_SEED = 2008
#: Backbone hydrogen bonds (N of residue i, O of residue j; 1-based) of the native hairpin: the
#: cross-strand Asp3–Thr8 and Tyr1–Tyr10 pairs and the Gly7 N–H···O=C Asp3 turn bond. Without the
#: turn bond the Asp3–Thr8 pair broke within 10 ps of free MD (Cα-RMSD drifted to 0.17 nm).
REGISTER = ((3, 8), (8, 3), (1, 10), (10, 1), (7, 3))
REGISTER_DISTANCE = 0.30  # nm, N···O
REGISTER_STRENGTH = 5.0e3  # kJ/mol/nm²
#: Restrained relaxation: side chains pack around the hairpin at this temperature [K] for this many
#: 1-fs Langevin steps before the final unrestrained minimisation.
RELAX_TEMPERATURE = 300.0
RELAX_STEPS = 20_000
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "systems" / "chignolin_cln025.pdb"


def heavy_atom_backbone() -> app.PDBFile:
    """The hairpin without hydrogens (C-terminal OXT included), as an OpenMM PDBFile."""
    import PeptideBuilder
    from Bio.PDB import PDBIO

    phi = [phi for phi, _ in BACKBONE[1:]]
    psi_im1 = [psi for _, psi in BACKBONE[:-1]]
    structure = PeptideBuilder.make_structure(SEQUENCE, phi, psi_im1)
    PeptideBuilder.add_terminal_OXT(structure)
    buffer = io.StringIO()
    writer = PDBIO()
    writer.set_structure(structure)
    writer.save(buffer)
    return app.PDBFile(io.StringIO(buffer.getvalue()))


def build(tolerance: float = 1.0) -> tuple[app.Topology, np.ndarray]:
    """Protonate, minimise and relax the hairpin; return topology and positions ``(n_atoms, 3)`` [nm].

    ``tolerance`` is the minimiser's RMS-force tolerance in kJ/mol/nm. Deterministic: one CPU
    thread, seeded hydrogen placement and seeded Langevin dynamics.
    """
    forcefield = app.ForceField(*FORCEFIELD)
    pdb = heavy_atom_backbone()
    modeller = app.Modeller(pdb.topology, pdb.positions)
    random.seed(HYDROGEN_SEED)  # Modeller places new hydrogens with Python's global `random`
    reference = openmm.Platform.getPlatformByName("Reference")  # thread-order independent
    modeller.addHydrogens(forcefield, pH=7.0, platform=reference)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff)
    system.addForce(_backbone_restraint(modeller.topology, modeller.positions))
    system.addForce(_register_restraint(modeller.topology))
    integrator = openmm.LangevinMiddleIntegrator(RELAX_TEMPERATURE * unit.kelvin, 1.0 / unit.picosecond,
                                                 1.0 * unit.femtosecond)
    integrator.setRandomNumberSeed(HYDROGEN_SEED)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    context.setPositions(modeller.positions)
    minimise = partial(openmm.LocalEnergyMinimizer.minimize, context,
                       tolerance * unit.kilojoule_per_mole / unit.nanometer)
    for strength in RESTRAINT_SCHEDULE:
        context.setParameter("k_restraint", strength)
        minimise()
    context.setParameter("k_register", REGISTER_STRENGTH)
    context.setVelocitiesToTemperature(RELAX_TEMPERATURE * unit.kelvin, HYDROGEN_SEED)
    integrator.step(RELAX_STEPS)
    context.setParameter("k_register", 0.0)
    minimise()
    state = context.getState(getPositions=True, getEnergy=True)
    log.info("built CLN025: %d atoms, E = %s", system.getNumParticles(), state.getPotentialEnergy())
    return modeller.topology, state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def _register_restraint(topology: app.Topology) -> openmm.CustomBondForce:
    """Flat-bottom restraint (strength ``k_register``) keeping the :data:`REGISTER` N···O pairs
    within :data:`REGISTER_DISTANCE`."""
    force = openmm.CustomBondForce(f"k_register*step(r-{REGISTER_DISTANCE})*(r-{REGISTER_DISTANCE})^2")
    force.addGlobalParameter("k_register", 0.0)
    atoms = {(a.residue.index + 1, a.name): a.index for a in topology.atoms()}
    for donor, acceptor in REGISTER:
        force.addBond(atoms[(donor, "N")], atoms[(acceptor, "O")], [])
    return force


def _backbone_restraint(topology: app.Topology, positions) -> openmm.CustomExternalForce:
    """Harmonic restraint of backbone heavy atoms to ``positions``, strength ``k_restraint``."""
    force = openmm.CustomExternalForce("0.5*k_restraint*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    force.addGlobalParameter("k_restraint", 0.0)
    for name in ("x0", "y0", "z0"):
        force.addPerParticleParameter(name)
    xyz = positions.value_in_unit(unit.nanometer)
    for atom in topology.atoms():
        if atom.name in ("N", "CA", "C", "O"):
            force.addParticle(atom.index, list(xyz[atom.index]))
    return force


def write_pdb(path: str | Path, topology: app.Topology, positions: np.ndarray) -> Path:
    """Atomically write ``positions`` [nm] with ``topology`` as PDB."""
    buffer = io.StringIO()
    app.PDBFile.writeFile(topology, positions * unit.nanometer, buffer, keepIds=True)
    return atomic.write_text(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: build and write the PDB (default ``systems/chignolin_cln025.pdb``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output PDB path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    topology, positions = build()
    log.info("wrote %s", write_pdb(args.out, topology, positions))


if __name__ == "__main__":
    main()
