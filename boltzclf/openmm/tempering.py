"""Parallel tempering through openmmtools, exported like plain MD (frames of the target temperature).

``openmmtools.multistate.ParallelTemperingSampler`` runs ``replicas`` geometrically spaced temperatures
from ``config.temperature`` to ``config.max_temperature``; each iteration is ``stride_ps`` of Langevin
dynamics per replica followed by replica swaps. Its NetCDF storage (``tempering.nc`` +
``tempering_checkpoint.nc``) holds every replica and is what a re-run resumes from once set-up
(minimisation, equilibration) has finished, which ``tempering_setup.json`` records; a run killed
during set-up starts it again. ``seed`` seeds numpy's global generator, from which openmmtools draws
the replica swaps; the Langevin noise comes from OpenMM integrators that openmmtools seeds at random,
so runs are statistically, not bitwise, reproducible, and so are resumed ones (openmmtools does not
checkpoint its random state). On completion the frames visiting the lowest temperature become ``trajectory.dcd``
with their reduced energies at that temperature, as plain MD writes them (:mod:`boltzclf.openmm.md_output`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import openmm.unit as unit
from tqdm.auto import tqdm

from boltzclf.core import atomic
from boltzclf.openmm.builders import quiet_openmmtools
from boltzclf.openmm.pool import check_platform
from boltzclf.openmm.md_config import MDConfig
from boltzclf.openmm.md_output import write_outputs
from boltzclf.openmm.system import MolecularSystem

log = logging.getLogger(__name__)


SETUP_MARKER = "tempering_setup.json"


def _sampler(system: MolecularSystem, config: MDConfig, out: Path):
    """The sampler and its reporter: resumed from ``tempering.nc`` when its set-up had finished,
    otherwise (new run, or one killed during minimisation or equilibration) created afresh."""
    quiet_openmmtools()
    from openmmtools import mcmc, multistate, states

    storage = out / "tempering.nc"
    np.random.seed(config.seed)  # openmmtools draws the replica swaps from numpy's global generator
    if storage.exists() and (out / SETUP_MARKER).exists():
        reporter = multistate.MultiStateReporter(str(storage), open_mode="a")
        log.info("resuming parallel tempering from %s", storage)
        sampler = multistate.ParallelTemperingSampler.from_storage(reporter)
        _use_own_contexts(sampler, config)
        return sampler, reporter
    for stale in out.glob("tempering*.nc"):  # storage of a set-up that was interrupted
        log.info("restarting the set-up of an interrupted run: removing %s", stale)
        stale.unlink()
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
    _use_own_contexts(sampler, config)
    if config.minimize:
        sampler.minimize()
    equilibration = round(config.equilibration_ps / config.stride_ps)
    if equilibration:
        sampler.equilibrate(equilibration)  # both store the states they end in as iteration 0
    atomic.write_json(out / SETUP_MARKER, {"minimized": config.minimize, "equilibration_iterations": equilibration})
    return sampler, reporter


def _use_own_contexts(sampler, config: MDConfig) -> None:
    """Give the sampler Context caches of its own on ``config.platform`` (openmmtools' global cache
    refuses a second run in the same process on another platform)."""
    from openmmtools import cache

    platform = check_platform(config.platform)
    properties = {"Threads": str(config.threads)} if config.platform == "CPU" else None
    contexts = cache.ContextCache(platform=platform, platform_properties=properties, capacity=None,
                                  time_to_live=None)
    sampler.energy_context_cache = sampler.sampler_context_cache = contexts


def temper(system: MolecularSystem, config: MDConfig, out: str | Path, progress: bool = True) -> dict:
    """Run (or resume) parallel tempering into ``out`` and write the lowest-temperature trajectory."""
    out = Path(out)
    if not log.isEnabledFor(logging.DEBUG):  # openmmtools logs every iteration at INFO
        logging.getLogger("openmmtools").setLevel(logging.WARNING)
    start = time.perf_counter()
    sampler, reporter = _sampler(system, config, out)
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
             "seed_scope": "replica swaps (numpy); the Langevin noise is not seeded by openmmtools",
             "wall_s_last_invocation": wall_s}
    return write_outputs(system, config, out, [positions], reduced, reduced * kT, extra)


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
