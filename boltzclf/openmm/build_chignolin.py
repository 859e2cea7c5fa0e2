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
hairpin, finally unrestrained, and written as PDB.
"""
from __future__ import annotations

import argparse
import io
import logging
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
    """Protonate and minimise the hairpin; return topology and positions ``(n_atoms, 3)`` [nm].

    ``tolerance`` is the minimiser's RMS-force tolerance in kJ/mol/nm.
    """
    forcefield = app.ForceField(*FORCEFIELD)
    pdb = heavy_atom_backbone()
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addHydrogens(forcefield, pH=7.0)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff)
    system.addForce(_backbone_restraint(modeller.topology, modeller.positions))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(modeller.positions)
    for strength in RESTRAINT_SCHEDULE:
        context.setParameter("k_restraint", strength)
        openmm.LocalEnergyMinimizer.minimize(context, tolerance * unit.kilojoule_per_mole / unit.nanometer)
    state = context.getState(getPositions=True, getEnergy=True)
    log.info("minimised CLN025: %d atoms, E = %s", system.getNumParticles(), state.getPotentialEnergy())
    return modeller.topology, state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)


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
