"""The ``boltzmann_generator`` workflow: a learned energy of alanine dipeptide, put to work and judged.

Stages, each resumable (a finished stage is reused when the command is run again):

1. **Reference** (``OUT/reference``, or an existing ``reference_ensemble`` run): MD frames at the
   target temperature, their true reduced energies and ΔF(φ > 0 vs φ < 0) ± SE.
2. **Training** (``OUT/<method>``): one all-atom energy per loss in ``methods`` (e.g. DSM and
   DSM + DiffCLF) on the reference frames, all warm-started from one shared ``pretrain`` run
   (``OUT/pretrain``), the same budget for every method; likewise a coarse-grained energy on the
   backbone beads (``OUT/cg_pretrain``, ``OUT/cg_<method>``) when ``coarse_grained`` is given.
3. **Sampling** the true Boltzmann density with each energy: ``smc`` (SMC along the diffusion path with
   the true density at t = 0), ``reweighting`` (probability-flow samples importance-weighted by the
   true density), ``langevin`` (Langevin dynamics on the learned U_θ(t_min, ·), unweighted) and
   ``cg_langevin`` (Langevin on the coarse-grained U_θ: a learned potential of mean force). Plus the
   **mode-blindness check**: SMC down to the learned density itself gives ``learned_dF_phi``, the
   basin free-energy difference the energy implies before any reweighting. Both SMC ΔF_φ come from
   two more walks, each confined at t = 0 to one side of φ (``smc_sides.json``,
   ``learned_sides.json``): the φ > 0 side holds 0.3 % of the mass, and an unconfined walk on a
   CPU-trained energy keeps too few lineages for any of them to end there.
4. **Metrics** (:mod:`boltzclf.evaluation.molecular_samples`) of every method × sampler against the
   reference, into ``OUT/results.json``, ``OUT/report.png`` and ``OUT/report.md``.

Each sampler's record (``OUT/<method>/<sampler>.json``, the unconfined walk's for SMC) and samples
(``<sampler>.npz``: φ/ψ, log-weights, clusters, true energies) are kept; delete a record to redo that
sampler (and ``smc_sides.json`` / ``learned_sides.json`` to redo the confined walks, whose ΔF_φ the
``smc`` and ``learned_*`` entries report; ``learned_basins.json`` holds the learned populations).

Under ``torchrun`` the reference dynamics share their walkers over the processes and every process
trains (DDP); rank 0 alone samples, measures and writes, and the others return an empty mapping.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import torch

from boltzclf.core import atomic, distributed, rundir
from boltzclf.core.config import InvalidValue, added_setting, apply_preset, from_mapping, load_yaml, require, to_dict
from boltzclf.core.errors import BoltzclfError
from boltzclf.core.formatting import fmt
from boltzclf.dynamics.output import load_frames
from boltzclf.evaluation.molecular_samples import ALDP_BACKBONE, Reference, aldp_angles, backbone_angles, \
    sample_metrics
from boltzclf.losses import LossConfig
from boltzclf.openmm.system import load_system
from boltzclf.pipelines import reference as reference_workflow
from boltzclf.pipelines.compare import PretrainConfig, pretrain_experiment
from boltzclf.pipelines.experiment import train_experiment, validation_losses
from boltzclf.pipelines.phi_sides import side_free_energy, with_sides
from boltzclf.pipelines.sampling import SampleConfig, draw, sampling_problem
from boltzclf.plots.boltzmann_generator import boltzmann_generator_report
from boltzclf.training.config import ExperimentConfig

log = logging.getLogger(__name__)

SAMPLERS = ("smc", "reweighting", "langevin", "cg_langevin")
#: The metrics of the learned density's own samples that a method's record keeps (prefixed ``learned_``).
LEARNED_KEYS = ("dF_phi", "dF_phi_se", "ess", "n_clusters", "populations", "populations_tv")
#: SampleConfig keys whose SamplerOptions counterpart has another name.
_SAMPLE_KEYS = {"n": "particles", "start_particles": "particles"}


@dataclass(frozen=True)
class ReferenceSource:
    """Where the reference ensemble comes from: an existing ``reference_ensemble`` output directory
    (``run``), or a ``reference_ensemble`` workflow YAML (with an optional ``preset``) run into
    ``OUT/reference``."""

    run: str | None = None
    workflow: str | None = None
    preset: str | None = None

    def __post_init__(self):
        require((self.run is None) != (self.workflow is None), "run", "give exactly one of run or workflow")
        require(self.preset is None or self.workflow is not None, "preset", "only with workflow")


@dataclass(frozen=True)
class SamplerOptions:
    """How each energy is put to work (same settings for every method).

    particles, groups, levels, resample_threshold, bridge_levels, mcmc_steps, step_size: SMC
    (``levels`` log-SNR spaced path levels, 0 = the model's grid; ``bridge_levels`` annealing levels
    from the learned first level to the true density, :mod:`boltzclf.sampling.bridge`, with
    ``mcmc_steps`` MALA moves of initial ``step_size`` (nm², adapted) at each). mcmc_on_path: the SMC
    to the true density makes its ``mcmc_steps`` moves at every level, not only in the bridge. The
    walks confined to one side of φ always do (they resample all along the path and, without moves,
    end on a dozen lineages whose log Ẑ varies by ± 5 kT); the walk down the learned density's own
    levels (its populations, the Langevin start) makes none. reweighting_particles,
    ode_steps: probability-flow samples (RK4, exact divergence) weighted by the true density.
    walkers, langevin_steps, dt (ps), friction (1/ps), record_every, integrator: Langevin on the
    learned U(t_min, ·) with atomic masses, started from SMC samples of the learned density itself.
    """

    samplers: tuple[Literal["smc", "reweighting", "langevin", "cg_langevin"], ...] = SAMPLERS
    particles: int = 1024
    groups: int = 8
    levels: int = 0
    resample_threshold: float = 0.3
    bridge_levels: int = 32
    mcmc_steps: int = 4
    step_size: float = 1e-6
    mcmc_on_path: bool = added_setting(False)
    reweighting_particles: int = 1024
    ode_steps: int = 0
    walkers: int = 64
    langevin_steps: int = 2000
    dt: float = 0.0005
    friction: float = 1.0
    record_every: int = 50
    integrator: Literal["baoab", "mala"] = "baoab"
    seed: int = 0

    def sample_config(self, sampler: str, target: str = "exact", confined: bool = False) -> SampleConfig:
        """The :class:`~boltzclf.pipelines.sampling.SampleConfig` of one sampler (``confined``: of an SMC
        walk confined to one side of φ, with ``mcmc_steps`` MALA moves at every level)."""
        common = {"seed": self.seed, "levels": self.levels}
        if sampler == "smc":
            bridge = self.bridge_levels if target == "exact" else 0
            moves = self.mcmc_steps if bridge or confined or self.mcmc_on_path else 0
            everywhere = confined or self.mcmc_on_path
            return SampleConfig("smc", n=self.particles, target=target, groups=self.groups,
                                resample_threshold=self.resample_threshold, bridge_levels=bridge, mcmc_steps=moves,
                                mcmc_on_path=everywhere and bridge > 0 and moves > 0, step_size=self.step_size,
                                **common)
        if sampler == "reweighting":
            return SampleConfig("ode", n=self.reweighting_particles, ode_steps=self.ode_steps, **common)
        return SampleConfig("langevin", n=self.walkers, target="model", langevin_steps=self.langevin_steps,
                            integrator=self.integrator, dt=self.dt, friction=self.friction,
                            record_every=self.record_every, step_size=self.step_size, start="smc",
                            start_particles=self.particles, groups=self.groups, **common)

    def __post_init__(self):
        try:
            for sampler in set(self.samplers) | {"smc"}:
                self.sample_config(sampler)
        except InvalidValue as exc:  # name the key as the workflow spells it
            require(False, _SAMPLE_KEYS.get(exc.key, exc.key), exc.message)


@dataclass(frozen=True)
class BoltzmannGeneratorWorkflow:
    """Reference → training (each of ``methods``) → sampling → metrics; see the module docstring.

    ``experiment`` is the all-atom training run (its ``data.trajectory`` is filled in with the
    reference); ``coarse_grained`` the backbone-bead one (``data.atoms`` = 4, 6, 8, 14, 16).
    """

    workflow: Literal["boltzmann_generator"]
    reference: ReferenceSource
    experiment: ExperimentConfig
    methods: dict[str, LossConfig]
    pretrain: PretrainConfig | None = None
    coarse_grained: ExperimentConfig | None = None
    cg_pretrain: PretrainConfig | None = None
    sampling: SamplerOptions = field(default_factory=SamplerOptions)
    description: str = ""

    def __post_init__(self):
        require(len(self.methods) > 0, "methods", "name at least one method")
        require(self.experiment.data is not None, "experiment.data", "the workflow trains on molecular data")
        require(self.experiment.data.atoms is None, "experiment.data.atoms", "the all-atom model keeps every atom")
        for name in self.methods:
            require(not name.startswith(("cg_", "pretrain")) and name != "reference", f"methods.{name}",
                    "names starting with cg_ or pretrain, and 'reference', are output directories")
        if self.coarse_grained is not None:
            data = self.coarse_grained.data
            require(data is not None and data.atoms == ALDP_BACKBONE, "coarse_grained.data.atoms",
                    f"must be the backbone beads {list(ALDP_BACKBONE)}")
        require(self.cg_pretrain is None or self.coarse_grained is not None, "cg_pretrain",
                "needs coarse_grained")
        require("cg_langevin" not in self.sampling.samplers or self.coarse_grained is not None,
                "sampling.samplers", "cg_langevin needs coarse_grained")


def run(workflow: BoltzmannGeneratorWorkflow, out: str | Path, device: torch.device) -> dict:
    """Run (or resume) the workflow into ``out``; returns ``results.json``'s content."""
    if workflow.reference.run is not None:  # refuse before the output directory exists
        _check_reference_run(Path(workflow.reference.run))
    out = distributed.on_main(lambda: rundir.prepare(out, to_dict(workflow), seed=workflow.sampling.seed,
                                                     schema=type(workflow), device=str(device)))
    reference_dir = _reference_run(workflow.reference, out, device)
    system = load_system(workflow.experiment.data.system)
    loaded = distributed.on_main(lambda: _load_reference(system, reference_dir), share=False)
    reference, summary = loaded if loaded is not None else (None, None)  # rank 0's
    results: dict = {"reference": summary}
    samples: dict = {}
    branches = [("", workflow.experiment, workflow.pretrain, ("smc", "reweighting", "langevin"))]
    if workflow.coarse_grained is not None:
        branches.append(("cg_", workflow.coarse_grained, workflow.cg_pretrain, ("cg_langevin",)))
    for prefix, experiment, pretrain, samplers in branches:
        experiment = _with_trajectory(experiment, reference_dir)
        if pretrain is not None:
            experiment = pretrain_experiment(experiment, pretrain, out / f"{prefix}pretrain", device)
        for method, loss in workflow.methods.items():
            config = dataclasses.replace(experiment, loss=loss)
            run_dir = out / f"{prefix}{method}"
            started = time.perf_counter()
            model = train_experiment(config, run_dir, device).eval()
            trained = time.perf_counter() - started
            distributed.on_main(lambda: _put_to_work(model, config, prefix, samplers, workflow.sampling, reference,
                                                     run_dir, trained, results.setdefault(method, {}), samples,
                                                     method), share=False)
    return distributed.on_main(lambda: _report(workflow, results, reference, samples, out), share=False) or {}


def _put_to_work(model, config: ExperimentConfig, prefix: str, samplers: tuple[str, ...], options: SamplerOptions,
                 reference: Reference, run_dir: Path, trained_s: float, record: dict, samples: dict,
                 method: str) -> None:
    """Measure the trained ``model`` of one method and branch: its own basins and validation losses
    (all-atom), then each of ``samplers``; fills ``record`` and ``samples[(method, sampler)]``."""
    _note_training(run_dir, config, trained_s)
    problem = sampling_problem(model, config)
    if not prefix:
        record.update(_learned_basins(problem, options, reference, run_dir))
        record["validation"] = _cached(run_dir / "validation.json", lambda: validation_losses(model, config))
    record[f"{prefix}training"] = json.loads((run_dir / "training.json").read_text())
    for sampler in samplers:
        if sampler in options.samplers:
            record[sampler], samples[(method, sampler)] = _sample(problem, sampler, options, reference, run_dir)


def _report(workflow: BoltzmannGeneratorWorkflow, results: dict, reference: Reference, samples: dict,
            out: Path) -> dict:
    results["summary"] = _summary(results, workflow.methods)
    atomic.write_json(out / "results.json", results)
    atomic.write_text(out / "report.md", markdown_report(results, workflow))
    figure = boltzmann_generator_report(reference, samples, results, title=workflow.description)
    atomic.save_figure(out / "report.png", figure)
    plt.close(figure)
    return results


def _reference_run(source: ReferenceSource, out: Path, device: torch.device) -> Path:
    """The reference run's directory, running the reference workflow first if asked to."""
    if source.run is not None:
        return _check_reference_run(Path(source.run))
    config = from_mapping(reference_workflow.ReferenceEnsembleWorkflow,
                          apply_preset(load_yaml(source.workflow), source.preset, source.workflow), source.workflow)
    path = out / "reference"
    if not (path / "results.json").exists():  # every process sees the same: rank 0 writes it last, inside run
        reference_workflow.run(config, path, device)
    return path


def _check_reference_run(path: Path) -> Path:
    if not (path / "results.json").exists() or not (path / "dynamics").is_dir():
        raise BoltzclfError(f"reference.run: {path} is not a finished reference_ensemble run "
                            "(no results.json and dynamics/)")
    return path


def _load_reference(system, reference_dir: Path) -> tuple[Reference, dict]:
    """The reference's frames as angles and true energies, and its headline numbers."""
    summary = json.loads((reference_dir / "results.json").read_text())
    frames = load_frames(reference_dir / "dynamics")  # (F, W, N, 3)
    energies = np.load(reference_dir / "dynamics" / "energies.npz")["reduced_energy"]  # (F, W) kT
    angles = backbone_angles(torch.from_numpy(frames.reshape(-1, *frames.shape[2:])))
    delta = summary["delta_f_phi_positive_vs_negative"]
    value, se = (float("nan") if delta[key] is None else delta[key] for key in ("value_kT", "se_kT"))  # null: undefined
    populations = {name: entry["value"] for name, entry in summary["populations"].items()}
    reference = Reference(angles, energies.reshape(-1).astype(np.float64), value, se, populations)
    return reference, {"dF_phi": value, "dF_phi_se": se, "populations": summary["populations"],
                       "frames": int(angles.shape[0]),
                       "wall_s": summary.get("dynamics", {}).get("wall_s"), "run": str(reference_dir)}


def _with_trajectory(experiment: ExperimentConfig, reference_dir: Path) -> ExperimentConfig:
    return dataclasses.replace(experiment, data=dataclasses.replace(experiment.data, trajectory=str(reference_dir)))


def _note_training(run_dir: Path, config: ExperimentConfig, wall_s: float) -> None:
    """Record the wall time of the invocation that finished the training (a resumed run: its last part;
    a later reuse of the finished run takes no time and is not recorded)."""
    path = run_dir / "training.json"
    if not path.exists():
        atomic.write_json(path, {"steps": config.training.steps, "warm_start": config.training.warm_start,
                                 "wall_s_finishing_invocation": wall_s})


def _cached(path: Path, compute):
    if path.exists():
        return json.loads(path.read_text())
    atomic.write_json(path, compute())
    return json.loads(path.read_text())  # as a resumed run reads it (non-finite values: null)


def _learned_basins(problem, options: SamplerOptions, reference: Reference, run_dir: Path) -> dict:
    """ΔF(φ > 0 vs φ < 0), basin populations and ESS of the learned density at t_min (SMC down the
    model's own levels), as ``learned_*`` keys; ΔF from one confined SMC per side of φ
    (:func:`~boltzclf.pipelines.phi_sides.side_free_energy`), that of the unconfined particles as
    ``learned_dF_phi_particles``."""
    def compute() -> dict:
        arrays = draw(problem, options.sample_config("smc", target="model"),
                      torch.Generator().manual_seed(options.seed))["arrays"]
        angles, _ = aldp_angles(arrays["samples"], problem.atoms, problem.system.positions)
        metrics = sample_metrics(reference, angles, arrays["log_weights"].cpu().numpy().astype(np.float64),
                                 arrays["ancestors"].cpu().numpy(), seed=options.seed)
        return {f"learned_{key}": metrics[key] for key in LEARNED_KEYS}
    record = _cached(run_dir / "learned_basins.json", compute)
    sides = _sides(problem, options, "model", run_dir / "learned_sides.json")
    return {**record, "learned_dF_phi_particles": record["learned_dF_phi"],
            "learned_dF_phi_particles_se": record["learned_dF_phi_se"], "learned_dF_phi": sides["dF_phi"],
            "learned_dF_phi_se": sides["dF_phi_se"], "learned_sides": sides}


def _sample(problem, sampler: str, options: SamplerOptions, reference: Reference, run_dir: Path
            ) -> tuple[dict, dict]:
    """One sampler's metrics and its per-sample arrays; SMC's ΔF_φ from the confined walks
    (:func:`~boltzclf.pipelines.phi_sides.with_sides`)."""
    record, arrays = _draw_and_measure(problem, sampler, options, reference, run_dir)
    if sampler == "smc":
        sides = _sides(problem, options, "exact", run_dir / "smc_sides.json")
        record = with_sides(record, sides, reference)
    return record, arrays


def _sides(problem, options: SamplerOptions, target: str, path: Path) -> dict:
    """The confined walks' ΔF_φ record for ``target`` (``exact`` or ``model``), cached in ``path``."""
    config = options.sample_config("smc", target, confined=True)
    return _cached(path, lambda: side_free_energy(problem, config, options.seed))


def _draw_and_measure(problem, sampler: str, options: SamplerOptions, reference: Reference, run_dir: Path
                      ) -> tuple[dict, dict]:
    """One sampler's metrics (cached in ``run_dir/<sampler>.json``) and its per-sample arrays."""
    record_path, arrays_path = run_dir / f"{sampler}.json", run_dir / f"{sampler}.npz"
    if record_path.exists() and arrays_path.exists():
        return json.loads(record_path.read_text()), dict(np.load(arrays_path))
    started = time.perf_counter()
    outcome = draw(problem, options.sample_config("langevin" if sampler == "cg_langevin" else sampler),
                   torch.Generator().manual_seed(options.seed))
    wall_s = time.perf_counter() - started
    arrays, diagnostics = outcome["arrays"], outcome["diagnostics"]
    angles, n_mirrored = aldp_angles(arrays["samples"], problem.atoms, problem.system.positions)
    weighted = sampler in ("smc", "reweighting")
    log_w = arrays["log_weights"].detach().cpu().numpy().astype(np.float64)
    clusters = arrays["ancestors"].cpu().numpy()
    energies = None
    if problem.target is not None:
        with torch.no_grad():
            energies = problem.target.energy(arrays["samples"].detach().to(torch.float64)).cpu().numpy()
    record = sample_metrics(reference, angles, log_w if weighted else None, clusters, energies, weighted,
                            options.seed)
    record.update(wall_s=wall_s, n_mirrored=n_mirrored, n_model_evals=_model_evals(diagnostics, sampler, options),
                  n_energy_evals=_energy_evals(diagnostics, sampler, options), diagnostics=diagnostics)
    saved = {"angles": angles, "log_w": log_w, "clusters": clusters}
    if energies is not None:
        saved["energies"] = energies
    atomic.save_npz(arrays_path, **saved)
    atomic.write_json(record_path, record)
    return json.loads(record_path.read_text()), saved  # as a resumed run reads it (non-finite values: null)


def _model_evals(diagnostics: dict, sampler: str, options: SamplerOptions) -> int:
    """Per-configuration evaluations of the learned energy (with its gradient)."""
    if sampler == "reweighting":
        return int(diagnostics["n_function_evaluations"]) * options.reweighting_particles
    return int(diagnostics["n_model_evals"])


def _energy_evals(diagnostics: dict, sampler: str, options: SamplerOptions) -> int:
    """Per-configuration evaluations of the true energy the sampler needed (metrics' evaluations excluded)."""
    if sampler == "smc":
        return int(diagnostics["n_target_evals"])
    return options.reweighting_particles if sampler == "reweighting" else 0


def _summary(results: dict, methods) -> dict:
    """The headline comparisons of the issue's acceptance list."""
    ref = results["reference"]
    rows = {}
    for method in methods:
        r = results[method]
        rows[method] = {
            "learned_dF_phi_error": r["learned_dF_phi"] - ref["dF_phi"] if r.get("learned_dF_phi") is not None
            else None,
            "learned_populations_tv": r.get("learned_populations_tv"),
            **{f"{sampler}_populations_tv": r[sampler]["populations_tv"] for sampler in SAMPLERS if sampler in r},
            **{f"{sampler}_dF_phi_z": r[sampler]["dF_phi_z"] for sampler in SAMPLERS if sampler in r},
            **{f"{sampler}_ess": r[sampler]["ess"] for sampler in SAMPLERS if sampler in r},
        }
    return rows


def markdown_report(results: dict, workflow: BoltzmannGeneratorWorkflow) -> str:
    """A short Markdown report: the reference, then one table row per method and sampler."""
    ref = results["reference"]
    lines = [f"# {workflow.description or 'Alanine dipeptide Boltzmann generator'}", "",
             f"Reference: ΔF(φ > 0 vs φ < 0) = {fmt(ref['dF_phi'], '.3f')} ± {fmt(ref['dF_phi_se'], '.3f')} kT from "
             f"{ref['frames']} MD frames ({ref['run']}).", "",
             "| method | sampler | ESS/N | lineages | ΔF_φ / kT | error / kT | z | basin TV | PMF error / kT² | T-W2 | "
             "E-W2 / kT | wall / s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for method in workflow.methods:
        r = results[method]
        if "learned_dF_phi" in r:
            error = r["learned_dF_phi"] - ref["dF_phi"] if r["learned_dF_phi"] is not None else None
            lines.append(f"| {method} | learned U(t_min) | {fmt(r['learned_ess'], '.3g')} | {r['learned_n_clusters']} | "
                         f"{fmt(r['learned_dF_phi'], '.3f')} ± {fmt(r['learned_dF_phi_se'], '.3f')} | "
                         f"{fmt(error, '+.3f')} | | {fmt(r['learned_populations_tv'], '.3f')} | | | | |")
        for sampler in SAMPLERS:
            if sampler not in r:
                continue
            s = r[sampler]
            lines.append(f"| {method} | {sampler} | {fmt(s['ess'], '.3g')} | {s['n_clusters']} | {fmt(s['dF_phi'], '.3f')} ± "
                         f"{fmt(s['dF_phi_se'], '.3f')} | {fmt(s['dF_phi_error'], '+.3f')} | {fmt(s['dF_phi_z'], '+.2f')} | "
                         f"{fmt(s['populations_tv'], '.3f')} | "
                         f"{fmt(s['pmf_error'], '.3g')} | {fmt(s['t_w2'], '.3g')} | {fmt(s['e_w2'], '.3g')} | "
                         f"{fmt(s['wall_s'], '.0f')} |")
    lines += ["", "ESS/N: Kish ESS of the weights (smc, reweighting, learned U) or n_eff/N of the basin populations "
              "(Langevin chains); lineages: distinct SMC ancestors (or walkers) left. "
              "z: (ΔF − ΔF_ref) / combined SE. ΔF of smc and of the learned U: −ln(Ẑ₊/Ẑ₋) of two SMC walks, "
              "each confined at t = 0 to one side of φ; of the other samplers: from their samples, undefined (–) "
              "when no weighted sample has φ > 0. "
              "basin TV: ½ Σ |p − p_ref| over the C7eq/C5/αR/αL populations.", ""]
    return "\n".join(lines)

