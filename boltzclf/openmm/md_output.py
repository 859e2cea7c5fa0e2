"""The final outputs of an OpenMM MD run: mdtraj-readable trajectory, energies and results record.

Written the same way by plain Langevin MD (:mod:`boltzclf.openmm.md`) and parallel tempering
(:mod:`boltzclf.openmm.tempering`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import mdtraj
import numpy as np
from mdtraj.formats import DCDTrajectoryFile

from boltzclf.core import atomic, provenance
from boltzclf.openmm.md_config import MDConfig
from boltzclf.openmm.system import MolecularSystem


def write_dcd(path: Path, position_chunks: Iterable[np.ndarray]) -> None:
    """Atomically write a DCD trajectory from frames ``(n, n_atoms, 3)`` [nm], one chunk in memory at a
    time (DCD stores float32 Å, as :meth:`mdtraj.Trajectory.save_dcd` writes it)."""

    def writer(tmp: str) -> None:
        with DCDTrajectoryFile(tmp, "w") as handle:
            for positions in position_chunks:
                handle.write(10.0 * np.asarray(positions, dtype=np.float32))  # nm -> Å

    atomic.save_with(path, writer)


def write_outputs(system: MolecularSystem, config: MDConfig, out: Path, position_chunks: Iterable[np.ndarray],
                  reduced_energy: np.ndarray, potential_energy: np.ndarray, extra: dict) -> dict:
    """Write trajectory.dcd, topology.pdb, energies.npz and results.json (all atomically).

    ``position_chunks`` yields the frames in order, ``(n, n_atoms, 3)`` nm each (streamed into the
    DCD, so the trajectory is never held in memory whole); ``reduced_energy`` ``(N,)`` kT at
    ``config.temperature``; ``potential_energy`` ``(N,)`` kJ/mol; ``extra`` is merged into the
    results record.
    """
    n_frames = len(reduced_energy)
    time_ps = config.stride_ps * np.arange(1, n_frames + 1)
    write_dcd(out / "trajectory.dcd", position_chunks)
    atomic.save_with(out / "topology.pdb", mdtraj.Trajectory(system.positions, system.mdtraj_topology).save_pdb)
    atomic.save_npz(out / "energies.npz", time=time_ps, reduced_energy=reduced_energy,
                potential_energy=potential_energy)
    results = {
        "system": system.spec.name,
        "n_frames": n_frames,
        "simulated_ns": n_frames * config.stride_ps / 1000.0,
        "timestep_fs": config.timestep_fs,
        "friction_per_ps": config.friction_per_ps,
        "temperature_K": config.temperature,
        "stride_ps": config.stride_ps,
        "seed": config.seed,
        "platform": config.platform,
        "threads": config.threads,
        **extra,
        "energy_unit": "kT at temperature_K (reduced_energy); kJ/mol (potential_energy)",
        "checksums_sha256": {name: provenance.sha256(out / name)
                             for name in ("trajectory.dcd", "topology.pdb", "energies.npz")},
    }
    atomic.write_json(out / "results.json", results)
    return results
