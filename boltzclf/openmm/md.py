"""Resumable plain Langevin MD on one OpenMM Context (the engine behind :mod:`boltzclf.openmm.simulate`).

Frames go to ``chunks/`` and the Context state to ``checkpoint.pt`` after every chunk. Resuming is exact: the state is checkpointed after every chunk together with the number of frames
written, and the running Context reloads each checkpoint it writes, so an interrupted run and an
uninterrupted one continue from identical states (same platform and thread count).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
import torch
from tqdm.auto import tqdm

from boltzclf.core import atomic
from boltzclf.core.errors import CheckpointError, one_line
from boltzclf.energy.units import kt_kj_per_mol
from boltzclf.openmm.md_config import MDConfig
from boltzclf.openmm.md_output import write_outputs
from boltzclf.openmm.pool import make_context
from boltzclf.openmm.system import MolecularSystem

log = logging.getLogger(__name__)


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
            raise CheckpointError(f"{self.path}: cannot resume from it ({one_line(exc)}); delete it to "
                                  "restart") from None
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


def langevin_md(system: MolecularSystem, config: MDConfig, out: Path, progress: bool = True) -> dict:
    """Run (or resume) Langevin MD of ``system`` into run directory ``out``; the results record.

    Frames are taken every ``stride_ps`` after ``equilibration_ps``; energies are reduced with kT at
    ``config.temperature``.
    """
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
    """Write the final outputs from the chunks, reading one chunk at a time."""
    n_chunks = -(-config.n_frames // config.checkpoint_frames)

    def chunks():
        return (atomic.torch_load(_chunk_path(out, k)) for k in range(n_chunks))

    energies = {name: np.concatenate([c[name].numpy() for c in chunks()])
                for name in ("reduced_energy", "potential_energy")}
    extra = {"integrator": "LangevinMiddleIntegrator", "production_wall_s": wall_s,
             "ns_per_day": config.n_frames * config.stride_ps / 1000.0 / wall_s * 86400.0}
    return write_outputs(system, config, out, (c["positions"].numpy() for c in chunks()),
                         energies["reduced_energy"], energies["potential_energy"], extra)
