"""The ``smc_comparison`` workflow: energies trained with each loss, then used as SMC intermediate targets.

For every target (an experiment: mixture, process, grid, network, training budget) and every method
(a loss), one model is trained into ``OUT/<target>/<method>/`` (resumable; the same budget for all
methods) and SMC runs from its prior down to the *true* target with the same particles, levels and
kernel. ``OUT/results.json`` holds per target and method ``ess_final``, ``ess_min``, ``log_z``,
``log_z_error`` (|log Ẑ − log Z|, log Z = 0 for the normalised mixtures), ``log_z_se``,
``mode_weights`` with standard errors, ``mode_weight_error`` and ``mmd`` (against exact samples), and
a ``composition`` section (see :mod:`boltzclf.pipelines.composition_check`); ``OUT/report.png`` shows
the ESS traces and the headline numbers. A target/method whose ``smc.json`` exists is not redone.
A target named in ``pretrain`` first trains one shared pre-training run in ``OUT/<target>/pretrain/``
(the reference recipe, as in the ``compare_losses`` workflow) that warm-starts each of its methods.
Under ``torchrun`` every process trains (DDP) and rank 0 alone runs SMC and writes; the others return
an empty mapping.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import torch

from boltzclf.core import atomic, distributed, rundir
from boltzclf.core.config import require, to_dict
from boltzclf.diffusion.grids import log_snr_grid
from boltzclf.evaluation.weighted_samples import weighted_sample_metrics
from boltzclf.losses import LossConfig
from boltzclf.pipelines.compare import PretrainConfig, pretrain_experiment
from boltzclf.pipelines.composition_check import run_composition
from boltzclf.pipelines.experiment import train_experiment
from boltzclf.plots.smc_report import smc_report
from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.paths import LearnedPath
from boltzclf.sampling.smc import SMCSettings, smc
from boltzclf.training.config import ExperimentConfig, TargetConfig, build_grid, build_process, build_target, \
    loss_process_mismatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SMCOptions:
    """SMC settings shared by every target and method.

    levels: path grid size, log-SNR spaced between each model's first and last level (0 = the model's
    own grid). kernel / posterior_variance: reverse kernel (:mod:`boltzclf.sampling.kernels`).
    """

    n_particles: int = 4096
    n_groups: int = 16
    resample_threshold: float = 0.3
    no_resample_last: int = 0
    levels: int = 0
    kernel: Literal["ddpm", "ei"] = "ddpm"
    posterior_variance: Literal["isotropic", "hessian"] = "hessian"
    mcmc_steps: int = 0
    step_size: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        require(self.levels == 0 or self.levels >= 2, "levels", "must be 0 (model grid) or >= 2")
        try:
            self.settings()
        except ValueError as exc:
            require(False, "n_particles", str(exc))

    def settings(self) -> SMCSettings:
        return SMCSettings(self.n_particles, self.n_groups, self.resample_threshold, self.no_resample_last,
                           self.mcmc_steps, mcmc_step_size=self.step_size)


@dataclass(frozen=True)
class CompositionOptions:
    """Compose two energies of the ``base`` target's experiment: one trained on ``base``, one on ``partner``
    (same experiment, another mixture), as a product and as a mixture with ``mixture_weights``."""

    base: str
    partner: TargetConfig
    mixture_weights: tuple[float, ...] = (0.5, 0.5)

    def __post_init__(self):
        require(len(self.mixture_weights) == 2 and all(w > 0 for w in self.mixture_weights)
                and abs(sum(self.mixture_weights) - 1.0) < 1e-9, "mixture_weights", "two positive weights summing to 1")


@dataclass(frozen=True)
class SMCComparisonWorkflow:
    """Train each ``methods`` loss on each ``targets`` experiment, then run SMC to the true target.

    ``pretrain`` maps target names to a shared pre-training run (see
    :class:`~boltzclf.pipelines.compare.PretrainConfig`) whose checkpoint warm-starts every method of
    that target; each method's budget is then the pre-training plus its own ``training.steps``.
    """

    workflow: Literal["smc_comparison"]
    methods: dict[str, LossConfig]
    targets: dict[str, ExperimentConfig]
    smc: SMCOptions = field(default_factory=SMCOptions)
    composition: CompositionOptions | None = None
    pretrain: dict[str, PretrainConfig] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        require(len(self.methods) > 0 and len(self.targets) > 0, "methods", "name at least one method and target")
        for target_name, experiment in self.targets.items():
            require(experiment.process.kind != "interpolant", f"targets.{target_name}.process.kind",
                    "SMC from the prior needs a diffusion process")
            for name, loss in self.methods.items():
                problem = loss_process_mismatch(loss, experiment.process.kind)
                require(problem is None, f"methods.{name}", problem or "")
        require("pretrain" not in self.methods, "methods.pretrain",
                "'pretrain' names a target's shared pre-training directory; rename the method")
        for target_name, pre in self.pretrain.items():
            require(target_name in self.targets, f"pretrain.{target_name}",
                    f"must name one of the targets ({', '.join(self.targets)})")
            experiment = self.targets[target_name]
            require(experiment.training.warm_start is None, f"pretrain.{target_name}",
                    f"the pre-training run warm-starts every method; remove targets.{target_name}.training.warm_start")
            problem = loss_process_mismatch(pre.loss, experiment.process.kind)
            require(problem is None, f"pretrain.{target_name}.loss.dsm_weighting", problem or "")
        if self.composition is not None:
            require(self.composition.base in self.targets, "composition.base",
                    f"must name one of the targets ({', '.join(self.targets)})")
            require(self.composition.base not in self.pretrain, "composition.base",
                    "the composition's base target cannot have a pretrain run (its partner model has none)")


def run(workflow: SMCComparisonWorkflow, out: str | Path, device: torch.device) -> dict:
    """Run (or resume) the workflow into ``out``; returns ``results.json``'s content."""
    out = distributed.on_main(lambda: rundir.prepare(out, to_dict(workflow), seed=workflow.smc.seed,
                                                     schema=type(workflow), device=str(device)))
    results: dict = {}
    traces: dict = {}
    for target_name, experiment in workflow.targets.items():
        results[target_name], traces[target_name] = {}, {}
        if target_name in workflow.pretrain:
            experiment = pretrain_experiment(experiment, workflow.pretrain[target_name],
                                             out / target_name / "pretrain", device)
        pre = workflow.pretrain.get(target_name)
        steps = {"pretrain": pre.steps if pre else 0, "method": experiment.training.steps,
                 "total": (pre.steps if pre else 0) + experiment.training.steps}
        for method, loss in workflow.methods.items():
            config = dataclasses.replace(experiment, loss=loss)
            record = _smc_record(config, workflow.smc, out / target_name / method, device)
            if record is not None:  # rank 0's
                record["steps"] = steps
                traces[target_name][method] = record.pop("ess")
                results[target_name][method] = record
    if workflow.composition is not None:
        results["composition"] = run_composition(workflow, out / "composition", device)
    return distributed.on_main(lambda: _report(workflow, results, traces, out), share=False) or {}


def _report(workflow: SMCComparisonWorkflow, results: dict, traces: dict, out: Path) -> dict:
    atomic.write_json(out / "results.json", results)
    figure = smc_report(results, traces, title=workflow.description)
    atomic.save_figure(out / "report.png", figure)
    plt.close(figure)
    return results


def path_times(config: ExperimentConfig, levels: int) -> torch.Tensor | None:
    """The SMC level grid: ``levels`` log-SNR spaced times over the model's range (None: its own grid)."""
    if levels == 0:
        return None
    process = build_process(config.process)
    grid = build_grid(config.grid, process)
    return log_snr_grid(process, float(grid[0]), float(grid[-1]), levels)


def _smc_record(config: ExperimentConfig, options: SMCOptions, out: Path, device) -> dict | None:
    """Train (every process) then run SMC (rank 0); the record on rank 0, None on the others."""
    record_path = out / "smc.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    model = train_experiment(config, out, device).eval()  # reloads a finished run
    return distributed.on_main(lambda: _smc_on_model(model, config, options, out), share=False)


def _smc_on_model(model, config: ExperimentConfig, options: SMCOptions, out: Path) -> dict:
    device = model.levels.device
    record_path = out / "smc.json"
    target = build_target(config.target)
    path = LearnedPath(model, final_target=target.to(device=device), times=path_times(config, options.levels))
    kernels = DiffusionKernels(model.process, path.times, model, model.sigma_data, options.kernel,
                               options.posterior_variance)
    generator = torch.Generator(device=device).manual_seed(options.seed)
    log.info("%s: SMC with %d particles over %d levels", out, options.n_particles, path.n_levels)
    dtype = next(model.parameters()).dtype
    result = smc(path, kernels, options.settings(), generator, dtype=dtype, device=device, progress=True)
    record = weighted_sample_metrics(result.samples, result.log_weights, result.ancestors, target, options.seed)
    record.update({
        "ess_final": result.ess_final, "ess_min": float(result.ess.min()), "ess": result.ess.tolist(),
        "log_z": result.log_z, "log_z_error": abs(result.log_z), "log_z_se": result.log_z_se,
        "n_model_evals": result.n_model_evals, "n_target_evals": result.n_target_evals,
        "n_nonfinite": result.n_nonfinite, "wall_s": result.wall_s,
    })
    atomic.write_json(record_path, record)
    return record
