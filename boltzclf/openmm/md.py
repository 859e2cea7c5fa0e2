"""Resumable Langevin MD producing reference data: trajectory, per-frame reduced energies, metadata.

Layout of a run directory (``--out``)::

    config.json, metadata.json      resolved config and provenance (boltzclf.core.rundir)
    checkpoint.pt                   OpenMM checkpoint (positions, velocities, RNG) + frames done
    chunks/chunk_00000.pt ...       frames of each completed chunk, float64 nm, reduced energies
    trajectory.dcd, topology.pdb    final mdtraj-readable trajectory (written when all chunks exist)
    energies.npz                    reduced_energy [kT], potential_energy [kJ/mol], time [ps]
    results.json                    MD parameters, throughput, output checksums

Resuming is exact: the state is checkpointed after every chunk together with the number of frames
written, and the running Context reloads each checkpoint it writes, so an interrupted run and an
uninterrupted one continue from identical states (same platform and thread count).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Optional
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import openmm.unit as unit
import torch
from tqdm.auto import tqdm

from boltzclf.core import atomic, provenance
from boltzclf.core.config import require
from boltzclf.core.errors import CheckpointError
from boltzclf.openmm.bridge import kt_kj_per_mol
from boltzclf.openmm.pool import make_context
from boltzclf.openmm.system import MolecularSystem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MDConfig:
    """Langevin MD settings. Units: ns, K, fs, 1/ps, ps.

    ``replicas > 1`` selects parallel tempering (:mod:`boltzclf.openmm.tempering`) between
    ``temperature`` and ``max_temperature``; otherwise plain LangevinMiddleIntegrator MD.
    """

    ns: float
    temperature: float
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    stride_ps: float = 0.1
    seed: int = 0
    equilibration_ps: float = 10.0
    minimize: bool = True
    platform: str = "CPU"
    threads: int = 2
    checkpoint_frames: int = 1000
    replicas: int = 1
    max_temperature: Optional[float] = None

    def __post_init__(self) -> None:
        flags = {"ns": "--ns", "temperature": "--temperature", "timestep_fs": "--timestep-fs",
                 "friction_per_ps": "--friction", "stride_ps": "--stride-ps"}
        for key, flag in flags.items():
            require(getattr(self, key) > 0, flag, "must be positive")
        require(self.equilibration_ps >= 0, "--equilibration-ps", "must be >= 0")
        require(self.threads >= 1 and self.checkpoint_frames >= 1, "--threads/--checkpoint-frames",
                "must be >= 1")
        require(math.isclose(self.stride_steps * self.timestep_fs, self.stride_ps * 1000.0, abs_tol=1e-9),
                "--stride-ps",
                f"must be a whole number of {self.timestep_fs} fs timesteps")
        require(self.replicas >= 1, "--replicas", "must be >= 1")
        require(self.replicas == 1 or (self.max_temperature or 0) > self.temperature,
                "--max-temperature", "parallel tempering needs a maximum above --temperature")

    @property
    def stride_steps(self) -> int:
        return max(1, round(self.stride_ps * 1000.0 / self.timestep_fs))

    @property
    def n_frames(self) -> int:
        return max(1, round(self.ns * 1000.0 / self.stride_ps))


def _integrator(config: MDConfig) -> openmm.LangevinMiddleIntegrator:
    integrator = openmm.LangevinMiddleIntegrator(
        config.temperature * unit.kelvin, config.friction_per_ps / unit.picosecond,
        config.timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(config.seed + 1)  # OpenMM treats seed 0 as "pick one at random"
    return integrator


class _Checkpointer:
    """Atomic save/load of the Context state together with the number of frames written."""

    def __init__(self, out: Path, context: openmm.Context) -> None:
        self.path = out / "checkpoint.pt"
        self.context = context

    def save(self, frames_done: int, wall_s: float) -> None:
        state = self.context.createCheckpoint()
        atomic.torch_save(self.path, {"openmm": state, "frames_done": frames_done, "wall_s": wall_s})
        self.context.loadCheckpoint(state)  # identical state whether or not the run is interrupted

    def load(self) -> tuple[int, float] | None:
        if not self.path.exists():
            return None
        try:
            data = torch.load(self.path, weights_only=True)
            self.context.loadCheckpoint(data["openmm"])
        except Exception as exc:
            raise CheckpointError(f"{self.path}: cannot resume from it ({exc}); delete it to restart") from None
        return int(data["frames_done"]), float(data["wall_s"])


def _prepare(context: openmm.Context, system: MolecularSystem, config: MDConfig) -> None:
    """Minimise, draw velocities and equilibrate a fresh run."""
    context.setPositions(system.positions)
    if config.minimize:
        openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(config.temperature * unit.kelvin, config.seed + 1)
    steps = round(config.equilibration_ps * 1000.0 / config.timestep_fs)
    if steps:
        context.getIntegrator().step(steps)


def _run_chunk(context: openmm.Context, config: MDConfig, n: int, kT: float) -> dict:
    positions = np.empty((n, context.getSystem().getNumParticles(), 3))
    energy = np.empty(n)
    for i in range(n):
        context.getIntegrator().step(config.stride_steps)
        state = context.getState(getPositions=True, getEnergy=True)
        positions[i] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        energy[i] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return {"positions": torch.from_numpy(positions), "potential_energy": torch.from_numpy(energy),
            "reduced_energy": torch.from_numpy(energy / kT)}


def simulate(system: MolecularSystem, config: MDConfig, out: str | os.PathLike,
             progress: bool = True) -> dict:
    """Run (or resume) MD of ``system`` into run directory ``out`` and return the results record.

    ``out`` must already be prepared with :func:`boltzclf.core.rundir.prepare`. Frames are taken every
    ``stride_ps`` after ``equilibration_ps``; energies are reduced with kT at ``config.temperature``.
    """
    out = Path(out)
    if (out / "results.json").exists():
        log.info("%s: run already complete", out)
        return json.loads((out / "results.json").read_text())
    if config.replicas > 1:
        from boltzclf.openmm.tempering import temper

        return temper(system, config, out, progress)
    kT = kt_kj_per_mol(config.temperature)
    context = make_context(system.system, config.platform, config.threads, _integrator(config))
    checkpointer = _Checkpointer(out, context)
    resumed = checkpointer.load()
    if resumed is None:
        _prepare(context, system, config)
        checkpointer.save(0, 0.0)
        frames_done, wall_s = 0, 0.0
    else:
        frames_done, wall_s = resumed
        log.info("resuming %s at frame %d of %d", out, frames_done, config.n_frames)
    with tqdm(total=config.n_frames, initial=frames_done, unit="frame", disable=not progress,
              desc=f"MD {system.spec.name}") as bar:
        while frames_done < config.n_frames:
            n = min(config.checkpoint_frames, config.n_frames - frames_done)
            start = time.perf_counter()
            chunk = _run_chunk(context, config, n, kT)
            wall_s += time.perf_counter() - start
            atomic.torch_save(_chunk_path(out, frames_done // config.checkpoint_frames), chunk)
            frames_done += n
            checkpointer.save(frames_done, wall_s)
            bar.update(n)
    return _finalise(system, config, out, wall_s)


def _chunk_path(out: Path, index: int) -> Path:
    return out / "chunks" / f"chunk_{index:05d}.pt"


def _finalise(system: MolecularSystem, config: MDConfig, out: Path, wall_s: float) -> dict:
    """Concatenate the chunks and write the final outputs."""
    n_chunks = -(-config.n_frames // config.checkpoint_frames)
    chunks = [torch.load(_chunk_path(out, k), weights_only=True) for k in range(n_chunks)]
    cat = {name: torch.cat([c[name] for c in chunks]).numpy()
           for name in ("positions", "reduced_energy", "potential_energy")}
    extra = {"integrator": "LangevinMiddleIntegrator", "production_wall_s": wall_s,
             "ns_per_day": len(cat["positions"]) * config.stride_ps / 1000.0 / wall_s * 86400.0}
    return write_outputs(system, config, out, cat["positions"], cat["reduced_energy"],
                         cat["potential_energy"], extra)


def write_outputs(system: MolecularSystem, config: MDConfig, out: Path, positions: np.ndarray,
                  reduced_energy: np.ndarray, potential_energy: np.ndarray, extra: dict) -> dict:
    """Write trajectory.dcd, topology.pdb, energies.npz and results.json (all atomically).

    ``positions`` ``(N, n_atoms, 3)`` nm; ``reduced_energy`` ``(N,)`` kT at ``config.temperature``;
    ``potential_energy`` ``(N,)`` kJ/mol; ``extra`` is merged into the results record.
    """
    time_ps = config.stride_ps * np.arange(1, len(positions) + 1)
    trajectory = mdtraj.Trajectory(positions, system.mdtraj_topology, time=time_ps)
    atomic.save_with(out / "trajectory.dcd", trajectory.save_dcd)
    atomic.save_with(out / "topology.pdb", mdtraj.Trajectory(system.positions, system.mdtraj_topology).save_pdb)
    atomic.save_npz(out / "energies.npz", time=time_ps, reduced_energy=reduced_energy,
                potential_energy=potential_energy)
    results = {
        "system": system.spec.name,
        "n_frames": len(positions),
        "simulated_ns": len(positions) * config.stride_ps / 1000.0,
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
