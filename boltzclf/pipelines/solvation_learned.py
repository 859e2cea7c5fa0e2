"""The learned solvation free energy: an energy U_θ(t, x) of the stochastic interpolant between the
solvated (t = 0) and vacuum (t = 1) ensembles of one path, integrated over t (METHOD.md §6.4–§6.5).

The two ensembles are the end windows (λ = 1 and λ = 0) of the classical run of the same path
(:mod:`boltzclf.pipelines.solvation_windows`), split by walker: the first walkers' recorded frames
train the energy, the held-out walkers' decorrelated frames give the two end corrections (annealed
from the true end density to the learned one, :mod:`boltzclf.sampling.annealing`) and the
interpolant samples of the TI sum, so the estimate is never scored on its training frames. The
optional SMC estimate (:class:`PathSMC`) walks the held-out vacuum frames down the learned levels to
the true solvated density; it uses the learned energy only as a guide, not its normalisers.
Interpolant pairs are independent draws with x1 Kabsch-superposed on x0
(:class:`~boltzclf.training.molecular_data.PairedMolecularData`), in training and in TI alike, and
with ``data.permute_equivalent`` both frames' equivalent atoms (methyl hydrogens) are relabelled at
random there too (:mod:`boltzclf.training.equivalent_atoms`).
Every method (e.g. DSM, DSM + DiffCLF) starts from one shared pre-training with the same budget.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from boltzclf.core import atomic, distributed
from boltzclf.core.config import added_setting, require
from boltzclf.core.errors import BoltzclfError
from boltzclf.estimators.estimate import Estimate
from boltzclf.estimators.interpolant_ti import interpolant_free_energy
from boltzclf.forcefield.solvation import solvation_field
from boltzclf.losses import LossConfig
from boltzclf.losses.endpoints import end_margins, profiled_offset
from boltzclf.energy.units import kt_kj_per_mol
from boltzclf.pipelines.compare import PretrainConfig, pretrain_experiment
from boltzclf.pipelines.experiment import train_on, with_sigma_data
from boltzclf.pipelines.solvation_velocity import VelocityOptions, train_velocity
from boltzclf.pipelines.solvation_windows import WindowSamples, free_energy_record
from boltzclf.forcefield.target import TorchEnergyTarget
from boltzclf.sampling.annealing import annealed_log_weights
from boltzclf.sampling.bridge import BridgedPath, BridgeKernels
from boltzclf.sampling.kernels import IDENTITY, InterpolantKernels
from boltzclf.sampling.paths import GroupedFrames, LearnedPath
from boltzclf.sampling.smc import SMCSettings, smc
from boltzclf.training.config import ExperimentConfig
from boltzclf.training.equivalent_atoms import AtomPermutations, system_permutations
from boltzclf.training.molecular_data import (MolecularDataset, PairedMolecularData, aligned_pairs, centre,
                                              describe_molecule, particle_sigma)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EndAnnealing:
    """How the two end corrections compare the learned energy with the true end densities: annealed
    importance sampling (:mod:`boltzclf.sampling.annealing`) from the held-out samples over ``levels``
    geometric-mean levels with ``mcmc_steps`` MALA steps at each, of initial size ``step_size`` [nm²]
    (adapted), ``replicas`` independent walks from each sample pooled into its weight. ``levels: 1`` with
    ``mcmc_steps: 0`` is the one-sided exponential average of METHOD.md §6.5.
    """

    levels: int = 1
    mcmc_steps: int = 0
    step_size: float = 1e-6
    replicas: int = added_setting(1)

    def __post_init__(self):
        require(self.levels >= 1, "levels", f"must be >= 1, got {self.levels}")
        require(self.mcmc_steps >= 0, "mcmc_steps", f"must be >= 0, got {self.mcmc_steps}")
        require(self.step_size > 0, "step_size", f"must be positive, got {self.step_size}")
        require(self.replicas >= 1, "replicas", f"must be >= 1, got {self.replicas}")


#: Configurations per learned-energy evaluation in the TI sum (bounds memory for large samples_per_level).
ENERGY_CHUNK = 4096

#: Above this span of the SMC groups' log Ẑ_g [kT] the estimate rests on a few particles (warned).
SMC_GROUP_SPREAD_KT = 3.0


@dataclass(frozen=True)
class PathSMC:
    """SMC along the learned interpolant (``learned_smc_<method>``): from the held-out frames of the
    vacuum end (t = 1) over ``bridge_levels`` geometric levels to the learned t_max, down the training
    grid refined ``refine``-fold in t, and over ``bridge_levels`` levels to the true solvated density
    (:class:`~boltzclf.sampling.bridge.BridgedPath` with a top bridge). There is no transport between
    levels (:class:`~boltzclf.sampling.kernels.IdentityKernels`) unless ``transport`` ε > 0: then the
    particles follow the interpolant SDE with diffusion ε between the learned levels, its drift from the
    learned velocity (``learned.velocity``) and score (:class:`~boltzclf.sampling.kernels.InterpolantKernels`;
    the bridges keep the identity). ``mcmc_steps`` MALA steps per level (initial size ``step_size``
    [nm²], adapted) move the particles, and each group resamples when its ESS/n falls below
    ``resample_threshold``. ``groups`` independent runs take disjoint blocks of the
    frames (:class:`~boltzclf.sampling.paths.GroupedFrames`), each frame ``replicas`` times; log Ẑ =
    ln Z_solvated − ln Z_vacuum = ΔF, with the error from the groups' spread.
    """

    bridge_levels: int = 300
    refine: int = 4
    replicas: int = 2
    groups: int = 8
    mcmc_steps: int = 1
    step_size: float = 1e-6
    resample_threshold: float = 0.5
    transport: float = added_setting(0.0)

    def __post_init__(self):
        require(self.bridge_levels >= 1 and self.refine >= 1 and self.replicas >= 1, "bridge_levels",
                "bridge_levels, refine and replicas must be >= 1")
        require(self.groups >= 2, "groups", f"must be >= 2 for an error bar, got {self.groups}")
        require(self.mcmc_steps >= 1, "mcmc_steps", "without transport the MALA steps move the particles: >= 1")
        require(self.step_size > 0, "step_size", f"must be positive, got {self.step_size}")
        require(0.0 <= self.resample_threshold <= 1.0, "resample_threshold", "must be in [0, 1]")
        require(self.transport >= 0.0, "transport", f"must be >= 0 (0: no transport), got {self.transport}")


@dataclass(frozen=True)
class LearnedOptions:
    """The learned estimators of a solvation workflow.

    experiment: the interpolant training run (``process.kind: interpolant``; ``data.system`` is the
    workflow's system). methods: one loss per learned estimate (reported as ``learned_ti_<name>``).
    pretrain: the shared pre-training. held_out: share of each end window's walkers kept for the
    estimate. samples_per_level: interpolant samples per level in the TI sum. end_annealing: how
    the end corrections are computed (:class:`EndAnnealing`). smc: SMC along the learned interpolant
    as a further estimate (:class:`PathSMC`; None: not run). velocity: the velocity network that
    transports its particles (:class:`~boltzclf.pipelines.solvation_velocity.VelocityOptions`; needed
    exactly when ``smc.transport`` > 0). bootstrap: resamples for the error.
    seed: of the evaluation draws.
    """

    experiment: ExperimentConfig
    methods: dict[str, LossConfig] = field(default_factory=dict)
    pretrain: PretrainConfig | None = None
    held_out: float = 0.25
    samples_per_level: int = 512
    end_annealing: EndAnnealing = field(default_factory=EndAnnealing)
    smc: PathSMC | None = None
    velocity: VelocityOptions | None = added_setting(None)
    bootstrap: int = 200
    seed: int = 0

    def __post_init__(self):
        require(self.experiment.process.kind == "interpolant", "experiment.process.kind",
                "the learned solvation estimate trains a stochastic interpolant")
        require(self.experiment.data is not None and self.experiment.data.atoms is None, "experiment.data",
                "needs data: {system: ...} with every atom")
        require(len(self.methods) > 0, "methods", "name at least one method")
        require(0.0 < self.held_out < 1.0, "held_out", f"must be in (0, 1), got {self.held_out}")
        require(self.samples_per_level >= 2 and self.bootstrap >= 2, "samples_per_level",
                "samples_per_level and bootstrap must be >= 2")
        transported = self.smc is not None and self.smc.transport > 0
        require(transported == (self.velocity is not None), "velocity",
                "set learned.velocity exactly when learned.smc.transport > 0 (it transports the SMC particles)")


@dataclass
class EndEnsembles:
    """Training frames ``train_start``/``train_end`` and held-out decorrelated samples ``start``/``end``
    ``(n, N, 3)`` [nm], centred (t = 0: λ = 1, solvated; t = 1: λ = 0, vacuum end)."""

    train_start: torch.Tensor
    train_end: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor


def end_ensembles(samples: WindowSamples, walkers: int, held_out: float) -> EndEnsembles:
    """Split the end windows of a classical run by walker into training frames and held-out samples."""
    n_train = walkers - max(1, int(round(held_out * walkers)))
    if n_train < 1:
        raise BoltzclfError(f"learned.held_out: {held_out} of {walkers} walkers per window leaves none to train on")
    frames = samples.trajectory  # (F, K·W, N, 3)
    last = len(samples.lambdas) - 1

    def training(k: int) -> torch.Tensor:  # every recorded frame (the dynamics discarded its equilibration),
        kept = frames[:, k * walkers:k * walkers + n_train]  # so the training set never moves with the analysis
        return centre(kept.reshape(-1, *kept.shape[2:]))

    def held(k: int) -> torch.Tensor:
        window = samples.window(k)
        walker = torch.arange(window.stop - window.start) % walkers  # kept samples are (F', W) row-major
        return centre(samples.positions[window][walker >= n_train])

    return EndEnsembles(training(last), training(0), held(last), held(0))


def pair_permutations(options: LearnedOptions, system, path: str, ends: EndEnsembles) -> AtomPermutations | None:
    """The random relabelling of equivalent atoms in the interpolant pairs (None unless
    ``experiment.data.permute_equivalent``): groups whose relabelling leaves both end energies of
    ``path`` unchanged, measured on training frames of both ends."""
    if not options.experiment.data.permute_equivalent:
        return None
    field = solvation_field(system, path)  # float64
    kT = kt_kj_per_mol(system.temperature)
    both_ends = lambda x: torch.stack([field(x, 1.0), field(x, 0.0)]) / kT  # noqa: E731
    return system_permutations(system, torch.cat([ends.train_start, ends.train_end]), both_ends)


def relabelled_held_out(ends: EndEnsembles, permutations: AtomPermutations | None, seed: int) -> EndEnsembles:
    """``ends`` with the held-out frames' equivalent atoms relabelled at random, once (from ``seed``).

    A walker keeps its methyls' labelling over a short run, so held-out walkers alone are not samples of
    the label-symmetric end densities that the model was trained towards; relabelled, they are.
    """
    if permutations is None:
        return ends
    gen = torch.Generator().manual_seed(seed)
    return dataclasses.replace(ends, start=permutations(ends.start, gen), end=permutations(ends.end, gen))


def end_energies(system, path: str, device: torch.device):
    """(u_0, u_1): reduced energies [kT] of the solvated (λ = 1) and vacuum (λ = 0) ends of ``path``, in
    float32 on ``device``, for positions ``(B, N, 3)`` [nm] (the end classes of ``loss.endpoints``)."""
    field = solvation_field(system, path, dtype=torch.float32, device=device)
    kT = kt_kj_per_mol(system.temperature)
    return (lambda x: field(x, 1.0) / kT), (lambda x: field(x, 0.0) / kT)


def learned_estimates(options: LearnedOptions, system, path: str, ends: EndEnsembles, out: Path,
                      device: torch.device) -> dict[str, dict]:
    """Train every method (resumable) and return its ``learned_ti_<method>`` record."""
    both = torch.cat([ends.train_start, ends.train_end])
    config = with_sigma_data(options.experiment, particle_sigma(both))
    atoms = np.arange(system.n_atoms)
    stats = MolecularDataset(both, both[:0], atoms, config.data.sigma_data)
    molecule = describe_molecule(system, stats, atoms, config.data.sigma_data)
    permutations = pair_permutations(options, system, path, ends)
    data = PairedMolecularData(ends.train_start, ends.train_end, rotations=True, device=device,
                               permutations=permutations)
    inputs = (config.data.system,)
    if options.pretrain is not None:
        config = pretrain_experiment(config, options.pretrain, out / "pretrain", device,
                                     train=lambda c, o, d: train_on(c, data, molecule, o, d, inputs))
    missing = [name for name in options.methods if not (out / name / "estimate.json").exists()]
    velocity = None
    if options.velocity is not None and missing:  # trained on every process, like the energies
        velocity = train_velocity(options.velocity, config, data, molecule, out / "velocity", device, inputs)
    records = {}
    for name, loss in options.methods.items():
        record_path = out / name / "estimate.json"
        if name not in missing:
            records.update(_records(name, json.loads(record_path.read_text())))
            continue
        started = time.perf_counter()
        model = train_on(dataclasses.replace(config, loss=loss), data, molecule, out / name, device, inputs,
                         end_energies=end_energies(system, path, device) if loss.endpoints else None).eval()
        trained = time.perf_counter() - started
        steps = config.training.steps + (options.pretrain.steps if options.pretrain else 0)
        record = distributed.on_main(lambda: _method_record(model, loss, ends, options, system, path, trained,
                                                            started, steps, record_path, velocity, permutations),
                                     share=False)
        records.update(_records(name, record) if record is not None else {})
    return records


def _method_record(model, loss, ends: EndEnsembles, options: LearnedOptions, system, path: str, trained_s: float,
                   started: float, steps: int, record_path: Path, velocity=None,
                   permutations: AtomPermutations | None = None) -> dict:
    """The estimates of one trained method, written to ``record_path`` (``velocity``: the transport of
    the SMC estimate, if any; ``permutations``: the relabelling of the training pairs, redone in TI and
    applied once to the held-out frames)."""
    device = next(model.parameters()).device
    energies = end_energies(system, path, device)
    ends = relabelled_held_out(ends, permutations, options.seed)
    record = _estimate(model, ends, energies, options, system.temperature, permutations)
    record.update(training_wall_s=trained_s, wall_s=time.perf_counter() - started, training_steps=steps)
    if options.smc is not None:
        record["smc"] = _smc_estimate(model, ends, options.smc, system, path, options.seed, velocity)
    if loss.endpoints:
        classes = _end_class_estimate(model, ends, energies, options, system.temperature, permutations)
        record["end_classes"] = {**classes, "training_g0_minus_g1_kT": float(
            model.end_free_energies[0] - model.end_free_energies[1]), "training_steps": steps}
    atomic.write_json(record_path, record)
    return record


def _records(name: str, record: dict) -> dict[str, dict]:
    """A method's ``estimate.json`` as result records: ``learned_ti_<name>`` and, where run,
    ``learned_smc_<name>`` and (end classes) ``learned_classes_<name>``."""
    out = {f"learned_ti_{name}": {k: v for k, v in record.items() if k not in ("end_classes", "smc")}}
    if "smc" in record:
        out[f"learned_smc_{name}"] = record["smc"]
    if "end_classes" in record:
        out[f"learned_classes_{name}"] = {**record["end_classes"], "wall_s": record["wall_s"]}
    return out


@torch.no_grad()
def _end_class_estimate(model, ends: EndEnsembles, energies, options: LearnedOptions, temperature: float,
                        permutations: AtomPermutations | None = None) -> dict:
    """g_0 − g_1 of the trained model refitted on the held-out samples (the end classes' normalisers,
    :func:`~boltzclf.losses.endpoints.profiled_offset`), with a bootstrap error over those samples
    (the model, its level free energies f included, held fixed); pairs drawn as in training."""
    param = next(model.parameters())
    as_model = dict(device=param.device, dtype=param.dtype)
    gen = torch.Generator(device=param.device).manual_seed(options.seed)
    start, end = ends.start.to(**as_model), ends.end.to(**as_model)
    margins = []
    for level, data, energy in ((0, start, energies[0]), (model.n_levels - 1, end, energies[1])):
        pair = aligned_pairs(start, end, data.shape[0], gen, permutations=permutations)
        margins.append(tuple(m.to(torch.float64).cpu() for m in end_margins(model, level, data, pair, energy, gen)))

    def estimate(index: list[torch.Tensor]) -> float:
        (a0, b0), (a1, b1) = margins
        i0, j0, i1, j1 = index
        return profiled_offset(a0[i0], b0[j0]) - profiled_offset(a1[i1], b1[j1])

    sizes = [len(margins[0][0]), len(margins[0][1]), len(margins[1][0]), len(margins[1][1])]
    boot_gen = torch.Generator().manual_seed(options.seed)
    value = estimate([torch.arange(n) for n in sizes])
    boot = torch.tensor([estimate([torch.randint(n, (n,), generator=boot_gen) for n in sizes])
                         for _ in range(options.bootstrap)])
    method = ("end classes (METHOD.md §3.5): g_0 − g_1 refitted on held-out samples; bootstrap error over "
              "those samples only (the trained model and its f held fixed)")
    result = Estimate(torch.tensor(value, dtype=torch.float64), boot.std().to(torch.float64),
                      torch.tensor(float(sum(sizes)), dtype=torch.float64), method)
    return free_energy_record(result, temperature, {"n_samples": int(sum(sizes)),
                                                       "n_energy_evaluations": int(sum(sizes))}, negate=False)


@torch.no_grad()
def _estimate(model, ends: EndEnsembles, energies, options: LearnedOptions, temperature: float,
              permutations: AtomPermutations | None = None) -> dict:
    """The learned-TI record of one trained model (``energies``: the true (u_0, u_1) of :func:`end_energies`;
    ``permutations``: the relabelling of its training pairs, redone in the TI draws)."""
    param = next(model.parameters())
    as_model = dict(device=param.device, dtype=param.dtype)
    levels = model.levels.to(**as_model)
    gen = torch.Generator(device=param.device).manual_seed(options.seed)
    start, end = ends.start.to(**as_model), ends.end.to(**as_model)
    n = options.samples_per_level
    forward, backward = ti_increments(model, start, end, n, gen, permutations)
    annealing = options.end_annealing
    start_ratio = _end_log_ratios(model, 0, start, energies[0], annealing, gen)
    end_ratio = _end_log_ratios(model, len(levels) - 1, end, energies[1], annealing, gen)
    result = interpolant_free_energy(forward, backward, start_ratio.log_weights.cpu(), end_ratio.log_weights.cpu(),
                                     options.bootstrap, options.seed)
    # evaluations of both energies per walk from an end sample: the first difference, then per level the
    # moves' start, their proposals and the next difference
    per_walk = annealing.levels * (annealing.mcmc_steps + 2) if annealing.mcmc_steps else 1
    per_end = annealing.replicas * per_walk
    evaluations = 3 * n * len(levels) + per_end * (start.shape[0] + end.shape[0])
    record = free_energy_record(result.estimate, temperature, {
        "n_samples": int(start.shape[0] + end.shape[0]), "n_energy_evaluations": evaluations}, negate=False)
    record["method"] += (f"; end corrections annealed over {annealing.levels} level(s) with {annealing.mcmc_steps} "
                         f"MALA step(s) each, {annealing.replicas} walk(s) per frame")
    record.update(parts_kT=result.parts, kish_fraction=result.kish_fraction,
                  end_log_ratio_std_kT={"start": float(start_ratio.log_weights.std()),
                                        "end": float(end_ratio.log_weights.std())},
                  end_walk_std_kT={"start": _walk_spread(start_ratio), "end": _walk_spread(end_ratio)},
                  end_mala_acceptance={"start": _mean_or_none(start_ratio.acceptance),
                                       "end": _mean_or_none(end_ratio.acceptance)})
    return record


@torch.no_grad()
def ti_increments(model, start: torch.Tensor, end: torch.Tensor, n: int, generator: torch.Generator,
                  permutations: AtomPermutations | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The TI increments of :func:`~boltzclf.estimators.interpolant_ti.interpolant_free_energy` for a
    learned interpolant energy: at every level t_i, ``n`` fresh samples x_t of the interpolant between
    aligned pairs of ``start`` and ``end`` frames ``(F, n_atoms, 3)`` [nm] (in the model's dtype and device),
    relabelled by ``permutations`` as the training pairs were.

    Returns
    -------
    forward, backward
        ``(L − 1, n)`` float64 [kT] on CPU: ln p̃_θ(t_{i+1}, x) − ln p̃_θ(t_i, x) for x at t_i, and for x at t_{i+1}.
    """
    levels = model.levels.to(device=start.device, dtype=start.dtype)

    def log_p(level: int, x: torch.Tensor) -> torch.Tensor:  # in chunks: a batch of many levels' samples is large
        return torch.cat([-model.energy(levels[level].expand(part.shape[0]), part).to(torch.float64).cpu()
                          for part in x.split(ENERGY_CHUNK)])

    forward, backward = [], []
    for i in range(len(levels)):
        x0, x1 = aligned_pairs(start, end, n, generator, permutations=permutations)
        x = model.process.corrupt((x0, x1), levels[i].expand(n), model.noise_like(x0, generator))
        here = log_p(i, x)
        if i + 1 < len(levels):
            forward.append(log_p(i + 1, x) - here)
        if i > 0:
            backward.append(here - log_p(i - 1, x))
    return torch.stack(forward), torch.stack(backward)


def _end_log_ratios(model, level: int, x: torch.Tensor, energy, annealing: EndAnnealing, generator):
    """Annealed log-weights from the true end density exp(−u) (samples ``x``) to the learned level:
    E[exp w] = Z_θ(t_level)/Z_end (:func:`~boltzclf.sampling.annealing.annealed_log_weights`)."""
    t = model.levels[level]

    def learned(y: torch.Tensor) -> torch.Tensor:
        return -model.energy(t.expand(y.shape[0]), y)

    def true(y: torch.Tensor) -> torch.Tensor:
        return -energy(y)

    return annealed_log_weights(x, true, learned, annealing.levels, annealing.mcmc_steps, annealing.step_size,
                                generator, project=model.centre, replicas=annealing.replicas, progress=True)


def _walk_spread(result) -> float | None:
    """Mean over frames of the spread [kT] of their walks' log-weights (None with one walk per frame)."""
    walks = result.walk_log_weights
    return float(walks.std(1).mean()) if walks.shape[1] > 1 else None


def _mean_or_none(values: torch.Tensor) -> float | None:
    """The mean of the finite ``values`` (None when there are none, e.g. no MALA moves)."""
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else None


def _smc_estimate(model, ends: EndEnsembles, options: PathSMC, system, path: str, seed: int, velocity=None) -> dict:
    """The ``learned_smc_<method>`` record: SMC from the held-out vacuum frames to the true solvated
    density along the learned interpolant (:class:`PathSMC`; ``velocity`` for ``transport`` > 0)."""
    param = next(model.parameters())
    as_model = dict(device=param.device, dtype=param.dtype)
    field = solvation_field(system, path, **as_model)
    solvated, vacuum = (TorchEnergyTarget(field, system.temperature, gb_scale=scale) for scale in (1.0, 0.0))
    frames = ends.end.to(**as_model)
    start = GroupedFrames(frames, vacuum.energy, options.groups)
    inner = LearnedPath(model, start=start, times=refined_times(model.levels, options.refine))
    walk = BridgedPath(inner, solvated, options.bridge_levels, top_target=vacuum, n_top=options.bridge_levels)
    used = frames.shape[0] // options.groups * options.groups
    settings = SMCSettings(n_particles=used * options.replicas, n_groups=options.groups,
                           resample_threshold=options.resample_threshold, mcmc_steps=options.mcmc_steps,
                           mcmc_step_size=options.step_size)
    generator = torch.Generator(device=param.device).manual_seed(seed)
    result = smc(walk, _transport(model, inner, velocity, options), settings, generator, **as_model, progress=True)
    moves = f"transport by the interpolant SDE (ε = {options.transport:g})" if velocity is not None else "no transport"
    method = (f"SMC along the learned interpolant ({walk.n_levels} levels: {options.bridge_levels}-level bridges "
              f"from the true vacuum end and to the true solvated end, {moves}, {options.mcmc_steps} MALA "
              f"step(s) per level); error from {options.groups} independent groups on disjoint frames")
    estimate = Estimate(torch.tensor(result.log_z, dtype=torch.float64),
                        torch.tensor(result.log_z_se, dtype=torch.float64),
                        torch.tensor(float(used), dtype=torch.float64), method)
    record = free_energy_record(estimate, system.temperature, {
        "n_samples": used, "n_energy_evaluations": result.n_model_evals + result.n_target_evals}, negate=False)
    record.update(wall_s=result.wall_s, n_particles=settings.n_particles, n_levels=walk.n_levels,
                  ess_final=result.ess_final, ess_min=float(result.ess.min()),
                  resampling_events=float(result.resampled.sum() * options.groups),
                  mala_acceptance=_mean_or_none(result.acceptance), n_nonfinite=result.n_nonfinite,
                  log_z_groups_kT=[float(v) for v in result.log_z_groups])
    spread = float(result.log_z_groups.max() - result.log_z_groups.min())
    if spread > SMC_GROUP_SPREAD_KT:
        log.warning("%s: SMC along the learned interpolant: the %d groups' log Ẑ span %.1f kT, so a few particles "
                    "carry the estimate and its delta-method error (%.2f kT) understates the uncertainty",
                    path, options.groups, spread, result.log_z_se)
    return record


def _transport(model, inner: LearnedPath, velocity, options: PathSMC):
    """The SMC kernels: the identity without a velocity, else the interpolant SDE between the learned
    levels (identity on the bridges)."""
    if velocity is None:
        return IDENTITY

    @torch.no_grad()
    def drift_velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return velocity(t.to(x.dtype), x)

    kernels = InterpolantKernels(model.process, inner.times, model, drift_velocity, options.transport)
    return BridgeKernels(kernels, options.bridge_levels, n_inner_levels=inner.n_levels)


def refined_times(levels: torch.Tensor, refine: int) -> torch.Tensor:
    """``levels`` ``(K,)`` with ``refine − 1`` evenly spaced times inserted in each interval: ``((K−1)·refine + 1,)``
    float64."""
    levels = levels.detach().to(torch.float64).cpu()
    steps = torch.arange(refine, dtype=torch.float64) / refine
    inner = (levels[:-1, None] + steps * (levels[1:] - levels[:-1])[:, None]).reshape(-1)
    return torch.cat([inner, levels[-1:]])
