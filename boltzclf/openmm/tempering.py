"""Parallel tempering through openmmtools, exported like plain MD (frames of the target temperature).

``openmmtools.multistate.ParallelTemperingSampler`` runs ``replicas`` geometrically spaced temperatures
from ``config.temperature`` to ``config.max_temperature``; each iteration is ``stride_ps`` of Langevin
dynamics per replica followed by replica swaps. Its NetCDF storage (``tempering.nc`` +
``tempering_checkpoint.nc``) holds every replica and is what a re-run resumes from; unlike plain MD
the resumed frames are statistically, not bitwise, equivalent (openmmtools does not checkpoint its
random state). On completion the frames visiting the lowest temperature become ``trajectory.dcd``
with their reduced energies at that temperature, as plain MD writes them (:mod:`boltzclf.openmm.md_output`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
from tqdm.auto import tqdm

from boltzclf.openmm.builders import quiet_openmmtools
from boltzclf.openmm.md_config import MDConfig
from boltzclf.openmm.md_output import write_outputs
from boltzclf.openmm.system import MolecularSystem

log = logging.getLogger(__name__)


def _sampler(system: MolecularSystem, config: MDConfig, storage: Path):
    quiet_openmmtools()
    from openmmtools import cache, mcmc, multistate, states

    cache.global_context_cache.platform = openmm.Platform.getPlatformByName(config.platform)
    if config.platform == "CPU":
        cache.global_context_cache.platform.setPropertyDefaultValue("Threads", str(config.threads))
    if storage.exists():
        reporter = multistate.MultiStateReporter(str(storage), open_mode="a")
        log.info("resuming parallel tempering from %s", storage)
        return multistate.ParallelTemperingSampler.from_storage(reporter), reporter
    move = mcmc.LangevinDynamicsMove(
        timestep=config.timestep_fs * unit.femtosecond,
        collision_rate=config.friction_per_ps / unit.picosecond,
        n_steps=config.stride_steps, reassign_velocities=False)
    sampler = multistate.ParallelTemperingSampler(mcmc_moves=move, number_of_iterations=config.n_frames,
                                                   online_analysis_interval=None)
    reporter = multistate.MultiStateReporter(str(storage), checkpoint_interval=1)
    thermo = states.ThermodynamicState(system.system, temperature=config.temperature * unit.kelvin)
    sampler_state = states.SamplerState(system.positions * unit.nanometer)
    sampler.create(thermo, sampler_state, reporter, min_temperature=config.temperature * unit.kelvin,
                   max_temperature=config.max_temperature * unit.kelvin, n_temperatures=config.replicas)
    if config.minimize:
        sampler.minimize()
    equilibration = round(config.equilibration_ps / config.stride_ps)
    if equilibration:
        sampler.equilibrate(equilibration)
    return sampler, reporter


def temper(system: MolecularSystem, config: MDConfig, out: str | Path, progress: bool = True) -> dict:
    """Run (or resume) parallel tempering into ``out`` and write the lowest-temperature trajectory."""
    out = Path(out)
    if not log.isEnabledFor(logging.DEBUG):  # openmmtools logs every iteration at INFO
        logging.getLogger("openmmtools").setLevel(logging.WARNING)
    start = time.perf_counter()
    sampler, reporter = _sampler(system, config, out / "tempering.nc")
    with tqdm(total=config.n_frames, initial=sampler.iteration, unit="iteration", disable=not progress,
              desc=f"tempering {system.spec.name}") as bar:
        while sampler.iteration < config.n_frames:
            n = min(config.checkpoint_frames, config.n_frames - sampler.iteration)
            sampler.run(n_iterations=n)
            bar.update(n)
    wall_s = time.perf_counter() - start
    positions, reduced = _lowest_temperature_frames(reporter)
    reporter.close()
    kT = system.kT * config.temperature / system.temperature
    extra = {"replicas": config.replicas, "max_temperature_K": config.max_temperature,
             "sampler": "openmmtools.multistate.ParallelTemperingSampler",
             "integrator": "openmmtools LangevinDynamicsMove",
             "wall_s_last_invocation": wall_s}
    return write_outputs(system, config, out, positions, reduced, reduced * kT, extra)


def _lowest_temperature_frames(reporter) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(N, n, 3)`` nm and reduced energies ``(N,)`` at state 0 for iterations 1..last."""
    energies, _, _ = reporter.read_energies()  # (iterations, replicas, states), reduced units
    positions, reduced = [], []
    for iteration in range(1, reporter.read_last_iteration() + 1):
        replica = int(np.flatnonzero(reporter.read_replica_thermodynamic_states(iteration) == 0)[0])
        state = reporter.read_sampler_states(iteration)[replica]
        positions.append(state.positions.value_in_unit(unit.nanometer))
        reduced.append(energies[iteration, replica, 0])
    return np.asarray(positions, dtype=np.float64), np.asarray(reduced, dtype=np.float64)
