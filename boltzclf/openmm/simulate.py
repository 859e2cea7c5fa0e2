"""``simulate()``: OpenMM MD into a run directory, dispatched to plain Langevin MD or parallel tempering.

Layout of a run directory (``--out``)::

    config.json, metadata.json      resolved config and provenance (boltzclf.core.rundir)
    checkpoint.pt                   OpenMM checkpoint (positions, velocities, RNG) + frames done
    chunks/chunk_00000.pt ...       frames of each completed chunk, float64 nm, reduced energies
    tempering.nc (+ checkpoint)     parallel tempering only: openmmtools storage of every replica
    trajectory.dcd, topology.pdb    final mdtraj-readable trajectory (written when all frames exist)
    energies.npz                    reduced_energy [kT], potential_energy [kJ/mol], time [ps]
    results.json                    MD parameters, throughput, output checksums
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from boltzclf.openmm.md import langevin_md
from boltzclf.openmm.md_config import MDConfig
from boltzclf.openmm.system import MolecularSystem
from boltzclf.openmm.tempering import temper

log = logging.getLogger(__name__)


def simulate(system: MolecularSystem, config: MDConfig, out: str | os.PathLike,
             progress: bool = True) -> dict:
    """Run (or resume) MD of ``system`` into run directory ``out`` and return the results record.

    ``out`` must already be prepared with :func:`boltzclf.core.rundir.prepare`. ``config.replicas > 1``
    selects parallel tempering (:func:`boltzclf.openmm.tempering.temper`), otherwise plain Langevin MD
    (:func:`boltzclf.openmm.md.langevin_md`). A finished run returns its recorded results.
    """
    out = Path(out)
    if (out / "results.json").exists():
        log.info("%s: run already complete", out)
        return json.loads((out / "results.json").read_text())
    if config.replicas > 1:
        return temper(system, config, out, progress)
    return langevin_md(system, config, out, progress)
