"""Final outputs of a batched-dynamics run: mdtraj-readable frames, energies, results with provenance.

Written atomically by rank 0 once every chunk exists (see :mod:`boltzclf.dynamics.engine` for the layout)::

    trajectory.dcd       target-temperature frames, time-major: DCD frame k = frame k // W of walker k % W
    slots/slot_RR.dcd    the same for slot RR ≥ 1 (only with ``save_all_temperatures``)
    topology.pdb         the system's structure (pass it as ``top`` to mdtraj.load)
    energies.npz         time_ps (F,); reduced_energy (F, W) [kT at the target temperature] of the
                         trajectory's frames; potential_energy (F, R, W) [kJ/mol] of every slot;
                         labels (F, R, W) replica label in each slot; kinetic (F, R) mean kinetic
                         energy per slot over its running walkers [kT of the slot]; temperatures_K (R,)
    results.json         parameters, throughput, exchange statistics, non-finite counts, peak
                         memory, software versions and output checksums

A chunk holds, per recorded frame, ``positions`` ``(F, S, W_p, N, 3)`` (S = 1, or R with
``save_all_temperatures``), ``potential_energy``, ``labels`` and ``kinetic`` ``(F, R, W_p)`` of the
W_p columns one process ran; :func:`read_chunk` puts the processes' columns side by side (axis 2).
:func:`load_frames` reads the trajectory back as ``(F, W, N, 3)``.
"""
from __future__ import annotations

import json
import math
import resource
from dataclasses import dataclass
from pathlib import Path

import mdtraj
import numpy as np
import torch

from boltzclf.core import atomic, provenance
from boltzclf.core.errors import BoltzclfError
from boltzclf.dynamics.config import BatchedMDConfig
from boltzclf.dynamics.tempering import ExchangeState
from boltzclf.energy.units import kt_kj_per_mol
from boltzclf.openmm.md_output import write_dcd
from boltzclf.openmm.system import MolecularSystem

INTEGRATOR = "BAOAB (boltzclf.sampling.langevin), per-slot thermostats, centre-of-mass motion removed"


@dataclass
class RunTotals:
    """What the final outputs need of a finished run, over every process.

    Attributes
    ----------
    config : the run's :class:`~boltzclf.dynamics.config.BatchedMDConfig`.
    temperatures : (R,) slot temperatures [K].
    exchange : :class:`~boltzclf.dynamics.tempering.ExchangeState` of all W columns.
    active : (R·W,) bool, slot-major over all columns: walkers never stopped by a non-finite value.
    device : where the walkers ran (rank 0's).
    wall_s : the slowest process's wall time [s].
    n_nonfinite : walkers stopped, summed over processes.
    world_size : processes that ran the columns.
    """

    config: BatchedMDConfig
    temperatures: torch.Tensor
    exchange: ExchangeState
    active: torch.Tensor
    device: str
    wall_s: float
    n_nonfinite: int
    world_size: int = 1

    @property
    def n_replicas(self) -> int:
        return len(self.temperatures)


def read_results(out: Path) -> dict | None:
    """The results record of a completed run in ``out``, or None."""
    path = out / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def chunk_path(out: Path, index: int, rank: int = 0, world_size: int = 1) -> Path:
    """The file of production chunk ``index`` of process ``rank`` in run directory ``out``."""
    suffix = f"_rank{rank:03d}" if world_size > 1 else ""
    return out / "chunks" / f"chunk_{index:05d}{suffix}.pt"


def read_chunk(out: Path, index: int, world_size: int = 1) -> dict[str, torch.Tensor]:
    """Chunk ``index`` with every process's columns side by side (see the module docstring)."""
    parts = [atomic.torch_load(chunk_path(out, index, rank, world_size)) for rank in range(world_size)]
    return {key: torch.cat([part[key] for part in parts], dim=2) for key in parts[0]}


def _chunks(out: Path, totals: RunTotals):
    for index in range(math.ceil(totals.config.n_frames / totals.config.checkpoint_frames)):
        yield read_chunk(out, index, totals.world_size)


def _write_dcd(path: Path, out: Path, totals: RunTotals, slot: int) -> None:
    """Stream the positions of slot ``slot`` chunk by chunk."""
    positions = (chunk["positions"][:, slot].to(torch.float32).numpy() for chunk in _chunks(out, totals))
    write_dcd(path, (p.reshape(-1, *p.shape[-2:]) for p in positions))


def peak_memory() -> dict:
    """Peak resident memory of this process (MiB) and, on CUDA, peak allocated device memory (MiB)."""
    peak = {"process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if torch.cuda.is_available():
        peak["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def finalise(system: MolecularSystem, totals: RunTotals, out: Path) -> dict:
    """Write the final outputs of the finished run ``totals``."""
    config = totals.config
    replicas = totals.n_replicas
    _write_dcd(out / "trajectory.dcd", out, totals, 0)
    if config.save_all_temperatures:
        for slot in range(1, replicas):
            _write_dcd(out / "slots" / f"slot_{slot:02d}.dcd", out, totals, slot)
    atomic.save_with(out / "topology.pdb", mdtraj.Trajectory(system.positions, system.mdtraj_topology).save_pdb)
    arrays = {k: torch.cat([c[k] for c in _chunks(out, totals)]).numpy()
              for k in ("potential_energy", "labels", "kinetic")}
    arrays["kinetic"] = np.nanmean(arrays["kinetic"], axis=2)  # stopped walkers (NaN) are left out
    temperatures = totals.temperatures.cpu().numpy()
    kT = kt_kj_per_mol(config.temperature)
    time_ps = config.stride_ps * np.arange(1, config.n_frames + 1)
    atomic.save_npz(out / "energies.npz", time_ps=time_ps, reduced_energy=arrays["potential_energy"][:, 0] / kT,
                    temperatures_K=temperatures, **arrays)
    results = _results(system, totals, arrays)
    names = ["trajectory.dcd", "topology.pdb", "energies.npz"]
    names += [f"slots/slot_{s:02d}.dcd" for s in range(1, replicas)] if config.save_all_temperatures else []
    results["checksums_sha256"] = {name: provenance.sha256(out / name) for name in names}
    atomic.write_json(out / "results.json", results)
    return results


def _results(system: MolecularSystem, totals: RunTotals, arrays: dict) -> dict:
    config = totals.config
    n_total = config.walkers * totals.n_replicas
    production_ns = config.n_frames * config.stride_ps / 1000.0
    simulated_ns = (config.equilibration_frames + config.n_frames) * config.stride_ps / 1000.0
    n_dof = 3 * system.n_atoms - 3
    kinetic_temperature = 2.0 * np.nanmean(arrays["kinetic"], 0) / n_dof * totals.temperatures.cpu().numpy()
    stopped = (~totals.active).nonzero().flatten().tolist()
    wall_s = totals.wall_s
    results = {
        "system": system.spec.name,
        "engine": "torch",
        "integrator": INTEGRATOR,
        "walkers": config.walkers,
        "replicas": totals.n_replicas,
        "processes": totals.world_size,
        "temperature_K": config.temperature,
        "n_frames": config.n_frames,
        "trajectory_frames": config.n_frames * config.walkers,
        "frame_order": "time-major: DCD frame k is frame k // walkers of walker k % walkers",
        "simulated_ns_per_walker": production_ns,
        "timestep_fs": config.timestep_fs,
        "friction_per_ps": config.friction_per_ps,
        "stride_ps": config.stride_ps,
        "equilibration_ps": config.equilibration_frames * config.stride_ps,
        "seed": config.seed,
        "device": totals.device,
        "dtype": config.dtype,
        "compiled": config.compiled,
        "chunk_size": config.chunk_size,
        "wall_s": wall_s,
        "aggregate_ns_per_day": simulated_ns * n_total / wall_s * 86400.0 if wall_s else None,
        "ns_per_day": (simulated_ns * config.walkers / wall_s * 86400.0) if wall_s else None,
        "kinetic_temperature_K": kinetic_temperature.tolist(),
        "n_nonfinite": totals.n_nonfinite,
        "stopped_walkers": stopped,
        "memory": peak_memory(),
        "energy_unit": "kT at temperature_K (reduced_energy); kJ/mol (potential_energy)",
        "software": provenance.package_versions(),
    }
    if totals.n_replicas > 1:
        results["replica_exchange"] = {"exchange_ps": config.exchange_ps,
                                       **totals.exchange.summary(totals.temperatures)}
    return results


def load_frames(out: str | Path) -> np.ndarray:
    """The target-temperature frames of run ``out`` as ``(F, W, N, 3)`` [nm, float32]."""
    out = Path(out)
    results = read_results(out)
    if results is None:
        raise BoltzclfError(f"{out}: no results.json; the run is not complete")
    traj = mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
    return traj.xyz.reshape(results["n_frames"], results["walkers"], traj.n_atoms, 3)
