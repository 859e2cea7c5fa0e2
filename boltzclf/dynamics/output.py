"""Final outputs of a batched-dynamics run: mdtraj-readable frames, energies, results with provenance.

Written atomically once every chunk exists (see :mod:`boltzclf.dynamics.engine` for the layout)::

    trajectory.dcd       target-temperature frames, time-major: DCD frame k = frame k // W of walker k % W
    slots/slot_RR.dcd    the same for slot RR ≥ 1 (only with ``save_all_temperatures``)
    topology.pdb         the system's structure (pass it as ``top`` to mdtraj.load)
    energies.npz         time_ps (F,); reduced_energy (F, W) [kT at the target temperature] of the
                         trajectory's frames; potential_energy (F, R, W) [kJ/mol] of every slot;
                         labels (F, R, W) replica label in each slot; kinetic (F, R) mean kinetic
                         energy per slot [kT of the slot]; temperatures_K (R,)
    results.json         parameters, throughput, exchange statistics, non-finite counts, peak
                         memory, software versions and output checksums

:func:`load_frames` reads the trajectory back as ``(F, W, N, 3)``.
"""
from __future__ import annotations

import json
import math
import resource
from pathlib import Path

import mdtraj
import numpy as np
import torch

from boltzclf.core import atomic, provenance
from boltzclf.core.errors import BoltzclfError
from boltzclf.energy.units import kt_kj_per_mol
from boltzclf.openmm.md_output import write_dcd
from boltzclf.openmm.system import MolecularSystem

INTEGRATOR = "BAOAB (boltzclf.sampling.langevin), per-slot thermostats, centre-of-mass motion removed"


def read_results(out: Path) -> dict | None:
    """The results record of a completed run in ``out``, or None."""
    path = out / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def chunk_path(out: Path, index: int) -> Path:
    """The file of production chunk ``index`` in run directory ``out``."""
    return out / "chunks" / f"chunk_{index:05d}.pt"


def _chunks(out: Path, n_chunks: int):
    for index in range(n_chunks):
        yield atomic.torch_load(chunk_path(out, index))


def _write_dcd(path: Path, out: Path, n_chunks: int, atoms: slice) -> None:
    """Stream the positions of walkers ``atoms`` (a slice of the saved walkers) chunk by chunk."""
    positions = (chunk["positions"][:, atoms].to(torch.float32).numpy() for chunk in _chunks(out, n_chunks))
    write_dcd(path, (p.reshape(-1, *p.shape[-2:]) for p in positions))


def peak_memory() -> dict:
    """Peak resident memory of this process (MiB) and, on CUDA, peak allocated device memory (MiB)."""
    peak = {"process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if torch.cuda.is_available():
        peak["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def finalise(system: MolecularSystem, sim, out: Path) -> dict:
    """Write the final outputs of the finished simulation ``sim``
    (a :class:`boltzclf.dynamics.engine.Simulation`; duck-typed, so this module never imports the engine)."""
    config = sim.config
    n_chunks = math.ceil(config.n_frames / config.checkpoint_frames)
    walkers, replicas = config.walkers, sim.n_replicas
    _write_dcd(out / "trajectory.dcd", out, n_chunks, slice(0, walkers))
    if config.save_all_temperatures:
        for slot in range(1, replicas):
            _write_dcd(out / "slots" / f"slot_{slot:02d}.dcd", out, n_chunks,
                       slice(slot * walkers, (slot + 1) * walkers))
    atomic.save_with(out / "topology.pdb", mdtraj.Trajectory(system.positions, system.mdtraj_topology).save_pdb)
    arrays = {k: torch.cat([c[k] for c in _chunks(out, n_chunks)]).numpy()
              for k in ("potential_energy", "labels", "kinetic")}
    temperatures = sim.temperatures.cpu().numpy()
    kT = kt_kj_per_mol(config.temperature)
    time_ps = config.stride_ps * np.arange(1, config.n_frames + 1)
    atomic.save_npz(out / "energies.npz", time_ps=time_ps, reduced_energy=arrays["potential_energy"][:, 0] / kT,
                    temperatures_K=temperatures, **arrays)
    results = _results(system, sim, arrays)
    names = ["trajectory.dcd", "topology.pdb", "energies.npz"]
    names += [f"slots/slot_{s:02d}.dcd" for s in range(1, replicas)] if config.save_all_temperatures else []
    results["checksums_sha256"] = {name: provenance.sha256(out / name) for name in names}
    atomic.write_json(out / "results.json", results)
    return results


def _results(system: MolecularSystem, sim, arrays: dict) -> dict:
    config = sim.config
    n_total = config.walkers * sim.n_replicas
    production_ns = config.n_frames * config.stride_ps / 1000.0
    simulated_ns = (config.equilibration_frames + config.n_frames) * config.stride_ps / 1000.0
    n_dof = 3 * system.n_atoms - 3
    kinetic_temperature = 2.0 * np.nanmean(arrays["kinetic"], 0) / n_dof * sim.temperatures.cpu().numpy()
    stopped = (~sim.state.active).nonzero().flatten().tolist()
    results = {
        "system": system.spec.name,
        "engine": "torch",
        "integrator": INTEGRATOR,
        "walkers": config.walkers,
        "replicas": sim.n_replicas,
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
        "device": str(sim.state.x.device),
        "dtype": config.dtype,
        "compiled": config.compiled,
        "chunk_size": config.chunk_size,
        "wall_s": sim.wall_s,
        "aggregate_ns_per_day": simulated_ns * n_total / sim.wall_s * 86400.0 if sim.wall_s else None,
        "ns_per_day": (simulated_ns * config.walkers / sim.wall_s * 86400.0) if sim.wall_s else None,
        "kinetic_temperature_K": kinetic_temperature.tolist(),
        "n_nonfinite": sim.n_nonfinite,
        "stopped_walkers": stopped,
        "memory": peak_memory(),
        "energy_unit": "kT at temperature_K (reduced_energy); kJ/mol (potential_energy)",
        "software": provenance.package_versions(),
    }
    if sim.n_replicas > 1:
        results["replica_exchange"] = {"exchange_ps": config.exchange_ps, **sim.exchange.summary(sim.temperatures)}
    return results


def load_frames(out: str | Path) -> np.ndarray:
    """The target-temperature frames of run ``out`` as ``(F, W, N, 3)`` [nm, float32]."""
    out = Path(out)
    results = read_results(out)
    if results is None:
        raise BoltzclfError(f"{out}: no results.json; the run is not complete")
    traj = mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
    return traj.xyz.reshape(results["n_frames"], results["walkers"], traj.n_atoms, 3)
