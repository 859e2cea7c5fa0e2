"""Sampling a trained run: one sampler, one output directory (``boltzclf sample``).

``DIR`` receives ``config.json`` (the sampling settings and the run it samples), ``metadata.json``,
``samples.npz`` (``samples`` ``(N, *event)``, ``log_weights`` ``(N,)`` normalised, ``ancestors``
``(N,)``), ``diagnostics.json`` (ESS trace, resampling events, acceptance, log Z ± SE, evaluation
counts, wall time), ``results.json`` (the summary, with mode masses against the exact target when the
run's target is an analytic mixture, or ΔF(φ > 0 vs φ < 0) for alanine dipeptide) and ``ess.png``.

Molecular runs (``boltzclf train`` on a trajectory): the exact target is the system's Boltzmann density
on the torch force field (all-atom runs only: a coarse-grained model has no true energy, so only
``--target model``), and Langevin uses the atoms' masses (amu), the system's temperature, ``dt`` in ps
and ``friction`` in 1/ps, with the centre-of-mass motion removed. Sampling is deterministic given the seed, so a
killed run re-run with the same command writes the same files; a finished one is not redone.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import torch

from boltzclf.core import atomic, distributed, rundir
from boltzclf.core.config import added_setting, require, to_dict
from boltzclf.core.errors import BoltzclfError
from boltzclf.diffusion.grids import log_snr_grid
from boltzclf.estimators.importance import summarise
from boltzclf.evaluation.molecular_samples import aldp_angles
from boltzclf.evaluation.weighted_samples import weighted_sample_metrics
from boltzclf.estimators.populations import phi_sign_free_energy
from boltzclf.forcefield.target import torch_target
from boltzclf.openmm.system import load_system
from boltzclf.pipelines.experiment import load_trained
from boltzclf.plots.sampling import ess_trace_figure
from boltzclf.sampling.ancestral import ancestral_sample
from boltzclf.sampling.bridge import BridgedPath, BridgeKernels
from boltzclf.sampling.distributed_smc import distributed_smc
from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.langevin import run_langevin
from boltzclf.sampling.ode import FlowSolver, probability_flow_sample
from boltzclf.sampling.paths import ConfinedPath, LearnedPath
from boltzclf.sampling.replica import ReplicaSettings, replica_exchange
from boltzclf.sampling.smc import SMCSettings, diffusion_ais, smc
from boltzclf.training.config import build_target

log = logging.getLogger(__name__)

SAMPLERS = ("ancestral", "ode", "smc", "ais", "langevin", "replica")


@dataclass(frozen=True)
class SampleConfig:
    """What to sample and how.

    sampler: one of :data:`SAMPLERS`. n: samples (particles, walkers). target: ``exact`` uses the
    run's true target density at level 0 (SMC, AIS, importance weights of ODE samples) and as the
    Langevin energy; ``model`` samples the learned energy itself. levels: size of the level grid the
    path sampler walks (log-SNR spaced between the model's first and last level; 0 = the model's own
    grid). kernel, posterior_variance: reverse kernel. groups, resample_threshold, no_resample_last,
    mcmc_steps, step_size: SMC settings (step_size is also the MALA step). bridge_levels: SMC with an
    exact target only: anneal from the learned first level to the target over this many extra levels
    (:mod:`boltzclf.sampling.bridge`), with the mcmc_steps MALA moves at those levels only, or at every
    level with mcmc_on_path (0: the target replaces the first level in one move, and MALA moves, if any,
    run at every level). langevin_steps,
    integrator, dt, friction: Langevin on U(t_0, ·) (toy targets: unit masses, kT = 1; molecules: amu,
    the system's temperature, ps and 1/ps), started (``start``) from ancestral samples or from
    ``start_particles`` SMC particles of the model's own first-level density resampled to n walkers
    (closer to the learned U's equilibrium than the score-driven ancestral sampler); record_every keeps every
    record_every-th step of every walker (0: only the last; a walker's frames are one error cluster). ode_steps:
    RK4 steps of the probability-flow ODE (0 = one per level). walkers, warmup: replica exchange runs
    ``walkers`` chains per level, ``warmup`` adaptation steps, then n/walkers production steps, keeping
    level 0 of every step (a walker's samples are correlated: its chain is one cluster for the errors).
    """

    sampler: Literal["ancestral", "ode", "smc", "ais", "langevin", "replica"]
    n: int = 4096
    target: Literal["exact", "model"] = "exact"
    seed: int = 0
    levels: int = 0
    kernel: Literal["ddpm", "ei"] = "ddpm"
    posterior_variance: Literal["isotropic", "hessian"] = "isotropic"
    groups: int = 8
    resample_threshold: float = 0.3
    no_resample_last: int = 0
    mcmc_steps: int = 0
    bridge_levels: int = 0
    mcmc_on_path: bool = added_setting(False)
    step_size: float = 1e-3
    langevin_steps: int = 1000
    integrator: Literal["baoab", "mala", "ghmc"] = "mala"
    dt: float = 1e-2
    friction: float = 1.0
    record_every: int = 0
    start: Literal["ancestral", "smc"] = "ancestral"
    start_particles: int = 1024
    ode_steps: int = 0
    walkers: int = 64
    warmup: int = 200

    def __post_init__(self):
        require(self.n >= 2, "n", f"must be >= 2, got {self.n}")
        require(self.levels == 0 or self.levels >= 2, "levels", "must be 0 (the model's grid) or >= 2")
        require(self.sampler not in ("smc", "ais") or (self.groups >= 1 and self.n % self.groups == 0
                                                         and self.n // self.groups >= 2), "groups",
                f"n ({self.n}) must be a multiple of groups ({self.groups}) with >= 2 particles per group")
        require(0.0 <= self.resample_threshold <= 1.0, "resample_threshold", "must be in [0, 1]")
        require(self.no_resample_last >= 0 and self.mcmc_steps >= 0, "mcmc_steps", "counts must be >= 0")
        require(self.bridge_levels >= 0, "bridge_levels", "must be >= 0")
        require(self.bridge_levels == 0 or (self.sampler == "smc" and self.target == "exact"), "bridge_levels",
                "bridges lead to an exact target: only for sampler smc with target exact")
        require(not self.mcmc_on_path or self.bridge_levels > 0, "mcmc_on_path",
                "only with bridge_levels (without a bridge the MALA moves run at every level already)")
        require(self.step_size > 0 and self.dt > 0 and self.friction > 0, "step_size",
                "step_size, dt and friction must be positive")
        require(self.langevin_steps >= 1, "langevin_steps", "must be >= 1")
        require(self.ode_steps >= 0, "ode_steps", "must be >= 0")
        require(0 <= self.record_every <= self.langevin_steps, "record_every", "must be in [0, langevin_steps]")
        require(self.start == "ancestral" or (self.start_particles % self.groups == 0
                                               and self.start_particles // self.groups >= 2), "start_particles",
                f"must be a multiple of groups ({self.groups}) with >= 2 particles per group")
        require(self.warmup >= 0, "warmup", "must be >= 0")
        require(self.sampler != "replica" or (self.walkers >= 1 and self.n % self.walkers == 0), "walkers",
                f"replica exchange keeps n/walkers steps of every walker: n ({self.n}) must be a multiple of "
                f"walkers ({self.walkers})")


@dataclass(frozen=True)
class Physics:
    """What Langevin needs beyond the energy: ``masses`` ``(n_atoms,)`` amu (None: unit), ``temperature``
    K of the reduced energies (None: kT = 1), and whether to remove the centre-of-mass motion."""

    masses: np.ndarray | None = None
    temperature: float | None = None
    remove_com: bool = False


@dataclass
class SamplingProblem:
    """A trained run's model with its exact target (None if it has none) and Langevin physics.

    ``system`` and ``atoms``: for molecular runs, the loaded system and the model's atom indices in it
    (the torch-force-field target follows its input's device and dtype).
    """

    model: torch.nn.Module
    target: object | None
    physics: Physics
    system: object | None = None
    atoms: np.ndarray | None = None


def sampling_problem(model, experiment) -> SamplingProblem:
    """The exact target and physics of a trained run (analytic mixture, or molecule on the torch force field)."""
    if experiment.data is None:
        return SamplingProblem(model, build_target(experiment.target), Physics())
    system = load_system(experiment.data.system)
    atoms = np.arange(system.n_atoms) if experiment.data.atoms is None else np.array(experiment.data.atoms)
    all_atoms = len(atoms) == system.n_atoms and bool((atoms == np.arange(system.n_atoms)).all())
    target = torch_target(system) if all_atoms else None
    return SamplingProblem(model, target, Physics(system.masses[atoms], system.temperature, remove_com=True),
                           system, atoms)


def _require_target(problem: SamplingProblem, config: SampleConfig) -> None:
    if config.target == "exact" and problem.target is None:
        raise BoltzclfError(f"--target exact: {config.sampler} needs the run's true energy, and a coarse-grained "
                            "model has none; use --target model")


def draw(problem: SamplingProblem, config: SampleConfig, generator: torch.Generator, region=None) -> dict:
    """Run ``config.sampler``; returns ``{"arrays": samples, log_weights, ancestors, "diagnostics": ...}``.

    ``region`` (``smc`` only): confine the walk's final target to it
    (:class:`~boltzclf.sampling.paths.ConfinedPath`; ``contains``, ``coordinate`` and ``width(σ)``,
    the tilt's width at noise level σ), so that log Z estimates the region's normaliser.
    """
    _require_target(problem, config)
    target = problem.target if config.target == "exact" else None
    if region is not None:
        if config.sampler != "smc":
            raise ValueError(f"a region confines SMC only, not {config.sampler}")
        return _smc(problem.model, target, config, generator, problem.physics, region)
    return _SAMPLERS[config.sampler](problem.model, target, config, generator, problem.physics)


def run(run_dir: str | Path, config: SampleConfig, out: str | Path, device: torch.device) -> dict:
    """Sample the trained model in ``run_dir`` into ``out``; returns the summary (``results.json``).

    Under ``torchrun`` (``smc`` only) every rank runs its share of the SMC groups
    (:func:`~boltzclf.sampling.distributed_smc.distributed_smc`); rank 0 gathers the particles and
    writes the outputs, the other ranks return an empty mapping.
    """
    model, experiment = load_trained(run_dir, device)
    _check_supported(model, config)
    problem = sampling_problem(model, experiment)
    _require_target(problem, config)  # before the output directory exists
    resolved = {"run": str(Path(run_dir).resolve()), "sampling": to_dict(config)}
    out = distributed.on_main(lambda: rundir.prepare(out, resolved, seed=config.seed, device=str(device),
                                                     schema={"sampling": type(config)},
                                                     inputs=(Path(run_dir) / "checkpoint.pt",)))
    if distributed.broadcast_object((out / "results.json").exists()):
        log.info("%s: finished earlier, reusing it", out)
        return json.loads((out / "results.json").read_text()) if distributed.is_main() else {}
    outcome = draw(problem, config, torch.Generator(device=device).manual_seed(config.seed))
    if not distributed.is_main():
        return {}
    summary = _summarise(outcome, problem, config)
    atomic.save_npz(out / "samples.npz", **{k: v.detach().cpu().numpy() for k, v in outcome["arrays"].items()})
    atomic.write_json(out / "diagnostics.json", outcome["diagnostics"])
    figure = ess_trace_figure(outcome["diagnostics"], title=f"{config.sampler}: {run_dir}")
    atomic.save_figure(out / "ess.png", figure)
    plt.close(figure)
    atomic.write_json(out / "results.json", summary)
    return summary


def _check_supported(model, config: SampleConfig) -> None:
    if distributed.world_size() > 1 and config.sampler != "smc":
        raise BoltzclfError(f"--sampler {config.sampler}: only smc runs on several processes (torchrun); "
                            "run the others in one process")
    distributed.require_shareable(config.groups, "--groups")
    if model.process.kind == "interpolant":
        raise BoltzclfError(f"{config.sampler}: this run trained a stochastic interpolant, whose samplers need a "
                            "velocity field that 'boltzclf train' does not learn; use the Python API "
                            "(boltzclf.sampling.kernels.InterpolantKernels, boltzclf.sampling.ode) with a velocity")
    if config.posterior_variance == "hessian" and model.particles:
        raise BoltzclfError("--posterior-variance hessian needs flat data; use isotropic for molecules")


def _path_times(model, levels: int) -> torch.Tensor | None:
    if levels == 0:
        return None
    return log_snr_grid(model.process, float(model.levels[0]), float(model.levels[-1]), levels)


def _path_and_kernels(model, target, config: SampleConfig, score_only: bool = False):
    path = LearnedPath(model, final_target=target, times=_path_times(model, config.levels), score_only=score_only)
    kernels = DiffusionKernels(model.process, path.times, model, model.sigma_data, config.kernel,
                               config.posterior_variance)
    return path, kernels


def _weighted_outcome(result) -> dict:
    diagnostics = {
        "log_z": result.log_z, "log_z_se": result.log_z_se, "log_z_groups": result.log_z_groups.tolist(),
        "ess_final": result.ess_final, "ess": result.ess.tolist(), "resampled": result.resampled.tolist(),
        "acceptance": result.acceptance.tolist(), "step_sizes": result.step_sizes.tolist(),
        "n_model_evals": result.n_model_evals, "n_target_evals": result.n_target_evals,
        "n_nonfinite": result.n_nonfinite, "wall_s": result.wall_s,
    }
    return {"arrays": {"samples": result.samples, "log_weights": result.log_weights, "ancestors": result.ancestors},
            "diagnostics": diagnostics}


def _smc(model, target, config: SampleConfig, generator, physics: Physics, region=None) -> dict:
    if config.bridge_levels:
        path, kernels = _path_and_kernels(model, None, config)
        path, kernels = BridgedPath(path, target, config.bridge_levels), BridgeKernels(kernels, config.bridge_levels)
    else:
        path, kernels = _path_and_kernels(model, target, config)
    if region is not None:
        path = ConfinedPath(path, region, region.width(model.process.sigma(path.times)))  # σ = γ/α per level
    settings = SMCSettings(config.n, config.groups, config.resample_threshold, config.no_resample_last,
                           config.mcmc_steps, mcmc_last=0 if config.mcmc_on_path else config.bridge_levels,
                           mcmc_step_size=config.step_size)
    if distributed.world_size() == 1:
        return _weighted_outcome(smc(path, kernels, settings, generator, device=model.levels.device, progress=True))
    result = distributed_smc(path, kernels, settings, config.seed, device=model.levels.device,
                             progress=distributed.is_main())
    parts = {name: distributed.gather_object(getattr(result, name).cpu())
             for name in ("samples", "log_weights", "ancestors")}  # every rank's, for rank 0's samples.npz
    if not distributed.is_main():
        return _weighted_outcome(result)  # this rank's share; rank 0 writes the outputs
    return _weighted_outcome(dataclasses.replace(result, **{name: torch.cat(chunks).to(model.levels.device)
                                                            for name, chunks in parts.items()}))


def _ais(model, target, config: SampleConfig, generator, physics: Physics) -> dict:
    path, kernels = _path_and_kernels(model, target, config, score_only=True)
    return _weighted_outcome(diffusion_ais(path, kernels, config.n, generator, config.groups,
                                           device=model.levels.device, progress=True))


def _unweighted(samples: torch.Tensor, diagnostics: dict) -> dict:
    n = samples.shape[0]
    return {"arrays": {"samples": samples, "log_weights": torch.full((n,), -float(np.log(n)), dtype=torch.float64),
                       "ancestors": torch.arange(n)}, "diagnostics": diagnostics}


def _ancestral(model, target, config: SampleConfig, generator, physics: Physics) -> dict:
    result = ancestral_sample(model, config.n, generator, kind=config.kernel,
                              posterior_variance=config.posterior_variance, times=_path_times(model, config.levels))
    return _unweighted(result.samples, {"n_model_evals": result.n_score_evaluations, "time": result.time})


def _ode(model, target, config: SampleConfig, generator, physics: Physics) -> dict:
    solver = FlowSolver(method="rk4", steps=config.ode_steps or None)
    flow = probability_flow_sample(model, config.n, generator, solver=solver)
    diagnostics = {"n_function_evaluations": flow.n_function_evaluations, "method": "rk4",
                   "log_q_mean": float(flow.log_prob.mean())}
    if target is None:
        return _unweighted(flow.samples, diagnostics)
    log_w = (-target.energy(flow.samples.to(torch.float64)) - flow.log_prob).to(torch.float64)
    stats = summarise(log_w)
    diagnostics.update(ess_final=stats["ess"], log_z=stats["log_z"], log_z_se=stats["log_z_se"],
                       max_weight=stats["max_weight"])
    log_w = log_w - torch.logsumexp(log_w, 0)
    return {"arrays": {"samples": flow.samples, "log_weights": log_w, "ancestors": torch.arange(config.n)},
            "diagnostics": diagnostics}


def _langevin_start(model, config: SampleConfig, generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``config.n`` start configurations, their cluster ids ``(n,)`` and the model evaluations spent.

    Ancestral samples are independent (one cluster each); walkers resampled from SMC particles share
    the cluster of their SMC lineage, since walkers started from one configuration are not independent.
    """
    if config.start == "ancestral":
        result = ancestral_sample(model, config.n, generator, times=_path_times(model, config.levels))
        return result.samples, torch.arange(config.n), result.n_score_evaluations
    path, kernels = _path_and_kernels(model, None, config)
    settings = SMCSettings(config.start_particles, config.groups, config.resample_threshold)
    result = smc(path, kernels, settings, generator, device=model.levels.device)
    pick = torch.multinomial(torch.exp(result.log_weights), config.n, replacement=True, generator=generator)
    return result.samples[pick], result.ancestors[pick].cpu(), result.n_model_evals


def _langevin(model, target, config: SampleConfig, generator, physics: Physics) -> dict:
    start, clusters, start_evals = _langevin_start(model, config, generator)
    energy = target if target is not None else model.at_time(float(model.levels[0]))
    result = run_langevin(energy, start.to(torch.float64 if target is not None else start.dtype),
                          config.langevin_steps, config.integrator, generator=generator, dt=config.dt,
                          friction=config.friction, temperature=physics.temperature, masses=physics.masses,
                          remove_com=physics.remove_com, step_size=config.step_size,
                          record_every=config.record_every or config.langevin_steps, progress=True)
    diagnostics = {"integrator": config.integrator, "steps": config.langevin_steps,
                   "acceptance_rate": result.acceptance_rate, "n_force_evaluations": result.n_force_evaluations,
                   "n_model_evals": result.n_force_evaluations * config.n + start_evals,
                   "n_nonfinite": result.n_nonfinite}
    frames = result.samples if config.record_every else result.samples[-1:]  # (R, W, *event)
    outcome = _unweighted(frames.reshape((-1,) + tuple(frames.shape[2:])), diagnostics)
    outcome["arrays"]["ancestors"] = clusters.repeat(frames.shape[0])  # each frame's walker's cluster
    return outcome


def _replica(model, target, config: SampleConfig, generator, physics: Physics) -> dict:
    path, kernels = _path_and_kernels(model, target, config)
    settings = ReplicaSettings(n_walkers=config.walkers, n_steps=config.n // config.walkers, warmup=config.warmup,
                               step_size=config.step_size)
    result = replica_exchange(path, kernels, settings, generator, device=model.levels.device, progress=True)
    samples = result.samples.reshape((-1,) + tuple(result.samples.shape[2:]))  # (steps·W, *event), step-major
    diagnostics = {"swap_acceptance": result.swap_acceptance.tolist(), "mala_acceptance": result.mala_acceptance.tolist(),
                   "round_trips": result.round_trips, "step_sizes": result.step_sizes.tolist(),
                   "n_model_evals": result.n_model_evals, "n_target_evals": result.n_target_evals,
                   "n_nonfinite": result.n_nonfinite, "wall_s": result.wall_s}
    outcome = _unweighted(samples, diagnostics)
    outcome["arrays"]["ancestors"] = torch.arange(config.walkers).repeat(config.n // config.walkers)
    return outcome


_SAMPLERS = {"ancestral": _ancestral, "ode": _ode, "smc": _smc, "ais": _ais, "langevin": _langevin,
             "replica": _replica}


def _summarise(outcome: dict, problem: SamplingProblem, config: SampleConfig) -> dict:
    arrays, diagnostics = outcome["arrays"], outcome["diagnostics"]
    summary = {"sampler": config.sampler, "n": config.n,
               **{k: diagnostics[k] for k in ("ess_final", "log_z", "log_z_se") if k in diagnostics}}
    if "ess" in diagnostics:
        summary["ess_min"] = min(diagnostics["ess"])
    if problem.system is None:
        summary.update(weighted_sample_metrics(arrays["samples"], arrays["log_weights"], arrays["ancestors"],
                                               problem.target, config.seed))
        summary["mode_weights_true"] = problem.target.weights.tolist()
    elif problem.system.spec.name.startswith("alanine_dipeptide"):
        angles, n_mirrored = aldp_angles(arrays["samples"], problem.atoms, problem.system.positions)
        estimate = phi_sign_free_energy(angles[:, 0], arrays["log_weights"].cpu().numpy(),
                                        clusters=arrays["ancestors"].cpu().numpy())
        summary.update(dF_phi=float(estimate.value), dF_phi_se=float(estimate.se), n_mirrored=n_mirrored)
    return summary

