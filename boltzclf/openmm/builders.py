"""Build an OpenMM ``System``, topology and positions from a validated :class:`SystemSpec`."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from boltzclf.core.errors import BoltzclfError
from boltzclf.openmm.spec import OpenMMToolsSource, PDBSource, SystemSpec

log = logging.getLogger(__name__)

_CONSTRAINTS = {"none": None, "HBonds": app.HBonds, "AllBonds": app.AllBonds, "HAngles": app.HAngles}


@dataclass(frozen=True)
class BuiltSystem:
    """What a builder returns: the OpenMM system, its topology and positions ``(n_atoms, 3)`` in nm."""

    system: openmm.System
    topology: app.Topology
    positions: np.ndarray


def build(spec: SystemSpec) -> BuiltSystem:
    """Build the OpenMM system a spec describes.

    Raises
    ------
    BoltzclfError
        If the test system is unknown or has no atoms, the PDB holds a residue or atom the force
        field has no template for (the message names the PDB file and the residue), or a coordinate
        is not finite (the message names the atom).
    """
    if isinstance(spec.source, OpenMMToolsSource):
        built, where = _from_openmmtools(spec.source, spec.path), f"{spec.path}: source.testsystem"
    elif isinstance(spec.source, PDBSource):
        built, where = _from_pdb(spec.source), spec.source.pdb
    else:
        raise BoltzclfError(f"{spec.path}: unsupported source {type(spec.source).__name__}")
    _check_structure(built, where)
    return built


def _check_structure(built: BuiltSystem, where: str) -> None:
    """Refuse a system without atoms and positions that are not finite, naming the first bad atom."""
    if built.system.getNumParticles() == 0:
        raise BoltzclfError(f"{where}: the system has no atoms")
    bad = np.flatnonzero(~np.isfinite(built.positions).all(axis=1))
    if len(bad):
        atom = list(built.topology.atoms())[bad[0]]
        raise BoltzclfError(f"{where}: non-finite coordinate for atom {atom.name} (index {bad[0]}) of "
                            f"residue {atom.residue.name}{atom.residue.id}"
                            + (f" and {len(bad) - 1} more atoms" if len(bad) > 1 else ""))


def quiet_openmmtools():
    """Import :mod:`openmmtools` without the banners its pymbar import prints and logs."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import openmmtools
            import openmmtools.multistate  # noqa: F401  (pulls in pymbar, the source of the banners)
            import openmmtools.testsystems  # noqa: F401
    finally:
        logging.disable(logging.NOTSET)
    return openmmtools


def _from_openmmtools(source: OpenMMToolsSource, where: str) -> BuiltSystem:
    testsystems = quiet_openmmtools().testsystems

    cls = getattr(testsystems, source.testsystem, None)
    if not (isinstance(cls, type) and issubclass(cls, testsystems.TestSystem)):
        raise BoltzclfError(
            f"{where}: source.testsystem: {source.testsystem!r} is not an openmmtools test system"
        )
    test = cls(constraints=_CONSTRAINTS[source.constraints])
    positions = np.asarray(test.positions.value_in_unit(unit.nanometer), dtype=np.float64)
    return BuiltSystem(test.system, test.topology, positions)


def _from_pdb(source: PDBSource) -> BuiltSystem:
    try:
        pdb = app.PDBFile(source.pdb)
    except Exception as exc:  # OpenMM raises bare Exceptions/ValueErrors on malformed PDBs
        raise BoltzclfError(f"{source.pdb}: cannot read PDB: {exc}") from None
    try:
        forcefield = app.ForceField(*source.forcefield)
    except Exception as exc:
        raise BoltzclfError(f"source.forcefield {list(source.forcefield)}: cannot load: {exc}") from None
    nonbonded = (
        {"nonbondedMethod": app.NoCutoff}
        if source.nonbonded_cutoff is None
        else {"nonbondedMethod": app.CutoffNonPeriodic,
              "nonbondedCutoff": source.nonbonded_cutoff * unit.nanometer}
    )
    unmatched = forcefield.getUnmatchedResidues(pdb.topology)
    if unmatched:
        names = ", ".join(f"{r.name}{r.id} (chain {r.chain.id})" for r in unmatched[:10])
        raise BoltzclfError(
            f"{source.pdb}: no template in {[Path(f).name for f in source.forcefield]} for residue(s) "
            f"{names}: unknown residue name, unknown or missing atoms, or a broken chain"
        )
    try:
        system = forcefield.createSystem(
            pdb.topology, constraints=_CONSTRAINTS[source.constraints], **nonbonded
        )
    except ValueError as exc:
        raise BoltzclfError(f"{source.pdb}: force field cannot parametrise it: {exc}") from None
    positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), np.float64)
    return BuiltSystem(system, pdb.topology, positions)
