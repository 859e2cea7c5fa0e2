"""Resumable batched Langevin dynamics and temperature replica exchange on the torch force field.

All walkers of all temperatures live in one tensor ``(R·W, N, 3)`` (slot-major, see
:mod:`boltzclf.dynamics.tempering`) and are advanced by the generic BAOAB step of
:mod:`boltzclf.sampling.langevin` with one thermostat temperature per slot; the force field is
evaluated in memory-bounded chunks (:meth:`TorchForceField.energy_and_force`).

Layout of a run directory (``--out``)::

    config.json, metadata.json      resolved config and provenance (boltzclf.core.rundir)
    checkpoint.pt                   positions, velocities, energies, forces, RNG state, replica labels,
                                    round-trip and exchange counters, frames done
    chunks/chunk_00000.pt ...       frames of each completed chunk (written before the checkpoint)
    trajectory.dcd, topology.pdb    the target-temperature frames, time-major: DCD frame k is time
                                    step k // W of walker k % W (written when all chunks exist)
    energies.npz, results.json      see :mod:`boltzclf.dynamics.output`

Resuming is exact: a chunk is written, then the checkpoint, so a run killed at any point restarts
from the last checkpoint and rewrites the chunks after it with identical frames (same device,
dtype and thread count; ``torch.compile`` recompiles the same kernels).

Under ``torchrun`` the W columns are split into equal blocks, one per process (each on its own GPU,
or CPU cores), with the random stream ``stream_seed(seed, rank)``; process 0 with one process is the
plain run. A column holds all R temperatures of its replica-exchange system, so exchanges never
cross processes and no positions travel while the walkers move: each process writes its own chunk
files (``chunk_00000_rank001.pt``), the small per-walker state reaches rank 0 only for the
checkpoint (one file with every process's state), and rank 0 writes the final outputs with all
columns in the global order. Such a run resumes on the same number of processes (the streams belong
to the processes); the run directory must be on a filesystem every process sees.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import torch
from tqdm.auto import tqdm

from boltzclf.core import atomic, distributed
from boltzclf.core.device import resolve_device
from boltzclf.core.errors import BoltzclfError, CheckpointError, one_line
from boltzclf.dynamics.config import BatchedMDConfig
from boltzclf.dynamics.output import RunTotals, chunk_path, finalise, read_results
from boltzclf.dynamics.tempering import ExchangeState, exchange, geometric_ladder
from boltzclf.energy.units import kt_kj_per_mol
from boltzclf.forcefield.field import TorchForceField
from boltzclf.forcefield.target import TorchEnergyTarget
from boltzclf.openmm.pool import make_context
from boltzclf.openmm.system import MolecularSystem
from boltzclf.sampling.langevin import Dynamics, LangevinState, baoab_step, init_state, kinetic_energy, make_dynamics

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Simulation:
    """Everything a run advances: the target, the integrator parameters and the mutable state."""

    config: BatchedMDConfig
    target: TorchEnergyTarget
    dynamics: Dynamics
    temperatures: torch.Tensor
    state: LangevinState
    exchange: ExchangeState
    generator: torch.Generator
    frames_done: int = 0
    wall_s: float = 0.0
    n_nonfinite: int = 0
    rank: int = 0
    world_size: int = 1

    @property
    def n_replicas(self) -> int:
        return len(self.temperatures)

    @property
    def n_columns(self) -> int:
        """Columns (walkers per temperature) this process runs."""
        return self.config.walkers // self.world_size


def check_supported(system: MolecularSystem) -> None:
    """Refuse systems the batched engine would simulate wrongly (constraints are not enforced)."""
    system.refuse_constraints("batched BAOAB (use the OpenMM engine for constrained dynamics)")


def minimised_positions(system: MolecularSystem, minimize: bool) -> np.ndarray:
    """The spec's positions ``(N, 3)`` [nm], locally minimised by OpenMM when ``minimize``."""
    if not minimize:
        return np.asarray(system.positions, dtype=np.float64)
    context = make_context(system.system, "CPU", 1)
    context.setPositions(system.positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    state = context.getState(getPositions=True)
    return state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)


def build_simulation(system: MolecularSystem, config: BatchedMDConfig,
                     solvation: tuple[str, torch.Tensor] | None = None) -> Simulation:
    """A fresh simulation of this process's columns: every walker starts at the (minimised) spec
    structure with Maxwell–Boltzmann velocities at its slot temperature (independent per walker).

    ``solvation = (path, λ)`` runs every walker at its own point of a solvation path (λ windows):
    ``path`` one of :data:`~boltzclf.forcefield.field.GB_PATHS`, ``λ`` ``(replicas·walkers,)``
    slot-major over all columns.

    Raises
    ------
    BoltzclfError
        When the processes cannot share the columns equally, or λ has the wrong shape.
    """
    device = distributed.init_from_environment(resolve_device(config.device))
    check_supported(system)
    dtype = _DTYPES[config.dtype]
    world, rank = distributed.world_size(), distributed.rank()
    columns = distributed.shard(config.walkers, world, rank, "walkers (--walkers)")
    temperatures = geometric_ladder(config.temperature, config.max_temperature or config.temperature,
                                    config.replicas)
    n_total = config.replicas * config.walkers
    path, lambdas = solvation if solvation is not None else ("gb_charges", None)
    if lambdas is not None:
        if lambdas.shape != (n_total,):
            raise BoltzclfError(f"solvation λ: need one per walker ({n_total},), got {tuple(lambdas.shape)}")
        lambdas = lambdas.reshape(config.replicas, config.walkers)[:, columns.start:columns.stop]
        lambdas = lambdas.reshape(-1).to(device=device, dtype=dtype)
    field = TorchForceField(system.system, gb_path=path).to(device=device, dtype=dtype)
    target = TorchEnergyTarget(field, config.temperature, gb_scale=lambdas, chunk_size=config.chunk_size,
                               compiled=config.compiled)
    start = distributed.on_main(lambda: minimised_positions(system, config.minimize))
    start = torch.as_tensor(start, dtype=dtype, device=device)
    x0 = start.expand(config.replicas * len(columns), *start.shape).clone()
    bath = temperatures.repeat_interleave(len(columns))
    dynamics = make_dynamics(x0, config.timestep_fs / 1000.0, config.friction_per_ps, config.temperature,
                             torch.as_tensor(system.masses), remove_com=True, bath_temperatures=bath)
    generator = torch.Generator(device=device).manual_seed(distributed.stream_seed(config.seed, rank))
    state = init_state(target, x0, dynamics, generator)
    return Simulation(config, target, dynamics, temperatures.to(device), state,
                      ExchangeState.start(config.replicas, len(columns), device), generator,
                      rank=rank, world_size=world)


def advance_frame(sim: Simulation) -> torch.Tensor:
    """Advance every walker by one stride (with exchanges); return the walkers stopped on the way."""
    config = sim.config
    stopped = torch.zeros_like(sim.state.active)
    for step in range(1, config.stride_steps + 1):
        sim.state, info = baoab_step(sim.target, sim.state, sim.dynamics, sim.generator)
        stopped |= info.nonfinite
        if sim.n_replicas > 1 and step % config.exchange_steps == 0:
            sim.state = exchange(sim.state, sim.exchange, sim.temperatures, config.temperature, sim.generator)
    return stopped


def record(sim: Simulation) -> dict[str, torch.Tensor]:
    """The current frame of this process's columns, on the CPU: positions to save ``(S, W_p, N, 3)``
    [nm] (S = 1, or R with ``save_all_temperatures``), potential energies ``(R, W_p)`` [kJ/mol]
    float64, replica labels ``(R, W_p)`` and kinetic energies ``(R, W_p)`` [kT of the slot] of the
    end-of-step velocities (about 2 % below 3N/2 for BAOAB at 1 fs, see
    :class:`~boltzclf.sampling.langevin.StepInfo`; NaN for stopped walkers)."""
    config, state = sim.config, sim.state
    shape = (sim.n_replicas, sim.n_columns)
    slots = sim.n_replicas if config.save_all_temperatures else 1
    kT = kt_kj_per_mol(config.temperature)
    kinetic = kinetic_energy(state.v, sim.dynamics)
    kinetic = torch.where(state.active, kinetic, torch.full_like(kinetic, math.nan)).reshape(shape)
    return {"positions": state.x.reshape(*shape, *state.x.shape[1:])[:slots].detach().cpu().clone(),
            "potential_energy": (state.energy.to(torch.float64) * kT).reshape(shape).cpu(),
            "labels": sim.exchange.labels.to(torch.int16).cpu().clone(),
            "kinetic": kinetic.cpu()}


def _local_state(sim: Simulation) -> dict:
    state = sim.state
    return {"x": state.x.cpu(), "v": state.v.cpu(), "energy": state.energy.cpu(), "force": state.force.cpu(),
            "active": state.active.cpu(), "generator": sim.generator.get_state(),
            "exchange": {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in sim.exchange.as_dict().items()},
            "wall_s": sim.wall_s, "n_nonfinite": sim.n_nonfinite}


def save_checkpoint(out: Path, sim: Simulation) -> None:
    """Write every process's state atomically into one file (after the chunks it follows)."""
    states = distributed.gather_object(_local_state(sim))
    if states is not None:
        atomic.torch_save(out / "checkpoint.pt", {"world_size": sim.world_size, "frames_done": sim.frames_done,
                                                  "ranks": states})


def load_checkpoint(out: Path, sim: Simulation) -> bool:
    """Restore this process's part of ``sim`` from ``out/checkpoint.pt``; False when there is none."""
    path = out / "checkpoint.pt"
    if not path.exists():
        return False
    device = sim.state.x.device
    try:
        data = torch.load(path, weights_only=True)
        if data["world_size"] != sim.world_size:
            raise ValueError(f"it was written by {data['world_size']} processes; resume it with "
                             f"{data['world_size']} (each process has its own random stream), not {sim.world_size}")
        mine = data["ranks"][sim.rank]
        if mine["x"].shape != sim.state.x.shape or mine["x"].dtype != sim.state.x.dtype:
            raise ValueError(f"it holds walkers {tuple(mine['x'].shape)} {mine['x'].dtype}, the config "
                             f"needs {tuple(sim.state.x.shape)} {sim.state.x.dtype}")
        sim.state = LangevinState(*(mine[k].to(device) for k in ("x", "v", "energy", "force", "active")))
        sim.generator.set_state(mine["generator"])
        sim.exchange = ExchangeState.from_dict({k: v.to(device) if isinstance(v, torch.Tensor) else v
                                                for k, v in mine["exchange"].items()})
        sim.frames_done, sim.wall_s = int(data["frames_done"]), float(mine["wall_s"])
        sim.n_nonfinite = int(mine["n_nonfinite"])
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot resume from it ({one_line(exc)}); delete it to restart") from None
    return True


def totals(sim: Simulation) -> RunTotals | None:
    """The run's totals over every process, on rank 0 (None on the others)."""
    parts = distributed.gather_object({"exchange": ExchangeState.from_dict(
        {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in sim.exchange.as_dict().items()}),
        "active": sim.state.active.cpu().reshape(sim.n_replicas, sim.n_columns),
        "wall_s": sim.wall_s, "n_nonfinite": sim.n_nonfinite})
    if parts is None:
        return None
    return RunTotals(sim.config, sim.temperatures.cpu(), ExchangeState.merge([p["exchange"] for p in parts]),
                     torch.cat([p["active"] for p in parts], dim=1).flatten(), str(sim.state.x.device),
                     max(p["wall_s"] for p in parts), sum(p["n_nonfinite"] for p in parts), sim.world_size)


def _segments(config: BatchedMDConfig, frames_done: int) -> list[tuple[int, int]]:
    """(first frame, frame count) of the remaining segments: the equilibration, then the chunks."""
    eq = config.equilibration_frames
    bounds = ([0, eq] if eq else [0]) + [eq + k for k in range(config.checkpoint_frames, config.n_frames,
                                                               config.checkpoint_frames)]
    bounds.append(eq + config.n_frames)
    return [(a, b - a) for a, b in zip(bounds[:-1], bounds[1:]) if a >= frames_done and b > a]


def run_segments(sim: Simulation, out: Path, progress: bool = True, label: str = "dynamics") -> Simulation:
    """Advance ``sim`` to the end, writing each production chunk and then a checkpoint."""
    config = sim.config
    eq = config.equilibration_frames
    total = eq + config.n_frames
    progress = progress and sim.rank == 0
    with tqdm(total=total, initial=sim.frames_done, unit="frame", disable=not progress, desc=label) as bar:
        for first, count in _segments(config, sim.frames_done):
            start = time.perf_counter()
            frames = []
            for _ in range(count):
                stopped = advance_frame(sim)
                if bool(stopped.any()):
                    sim.n_nonfinite += int(stopped.sum())
                    log.warning("%d walkers met non-finite energies or forces and were stopped (slots %s)",
                                int(stopped.sum()), stopped.nonzero().flatten()[:10].tolist())
                if first >= eq:
                    frames.append(record(sim))
                bar.update(1)
            if sim.state.x.device.type == "cuda":
                torch.cuda.synchronize()
            sim.wall_s += time.perf_counter() - start
            if frames:
                chunk = {k: torch.stack([f[k] for f in frames]) for k in frames[0]}
                index = (first - eq) // config.checkpoint_frames
                atomic.torch_save(chunk_path(out, index, sim.rank, sim.world_size), chunk)
            sim.frames_done = first + count
            save_checkpoint(out, sim)
    return sim


def simulate_batched(system: MolecularSystem, config: BatchedMDConfig, out: str | os.PathLike,
                     progress: bool = True, solvation: tuple[str, torch.Tensor] | None = None) -> dict:
    """Run (or resume) batched dynamics of ``system`` into the prepared run directory ``out``.

    ``solvation``: see :func:`build_simulation`. Under ``torchrun`` every process runs its share of
    the columns (see the module docstring). Returns the results record (see
    :func:`boltzclf.dynamics.output.finalise`) on every process.
    """
    out = Path(out)
    done = read_results(out)
    if done is not None:
        log.info("%s: run already complete", out)
        return done
    sim = build_simulation(system, config, solvation)
    if load_checkpoint(out, sim):
        log.info("resuming %s at frame %d", out, sim.frames_done)
    else:
        save_checkpoint(out, sim)
    run_segments(sim, out, progress, label=f"{system.spec.name} x{config.walkers * config.replicas}")
    return finish(system, sim, out)


def finish(system: MolecularSystem, sim: Simulation, out: Path) -> dict:
    """Write the final outputs of the finished ``sim`` (rank 0); its results record on every process."""
    run_totals = totals(sim)
    return distributed.on_main(lambda: finalise(system, run_totals, out))
