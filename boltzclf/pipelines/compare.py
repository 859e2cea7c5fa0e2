"""The ``compare_losses`` workflow: train one model per loss with the same budget, evaluate, report.

Each method runs in ``OUT/<method>/`` (its own resumable run directory); ``OUT/results.json`` holds
the headline metrics per method and ``OUT/report.png`` the figure. A method whose
``OUT/<method>/results.json`` exists is not retrained, so a killed workflow resumes where it stopped.
With ``pretrain`` set, one shared run in ``OUT/pretrain/`` (the reference recipe's score pre-training,
METHOD.md §6.2) comes first and its checkpoint warm-starts every method (``training.warm_start``).
Under ``torchrun`` every process trains (DDP) and rank 0 alone evaluates and writes; the others
return an empty mapping.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from boltzclf.core import atomic, distributed, rundir
from boltzclf.core.config import require, to_dict
from boltzclf.estimators.mmd import mmd
from boltzclf.evaluation.gmm_metrics import evaluation_levels
from boltzclf.evaluation.profiles import mode_line_profile
from boltzclf.losses import LossConfig
from boltzclf.pipelines.experiment import evaluate_experiment, train_experiment
from boltzclf.plots.comparison import comparison_report
from boltzclf.sampling.ancestral import ancestral_sample
from boltzclf.training.config import ExperimentConfig, build_target, loss_process_mismatch

log = logging.getLogger(__name__)

HEADLINE = ("mode_weight_error", "ess_mean", "clf_loss", "clf_loss_raw", "clf_loss_exact", "fisher_mean", "r2_mean")


@dataclass(frozen=True)
class PretrainConfig:
    """A shared pre-training run that warm-starts every method (METHOD.md §6.2: DSM, then fine-tuning).

    It trains ``steps`` steps of ``loss`` (default: DSM with k = 2 replicas, as many score evaluations
    per step as binary DiffCLF) with the experiment's model, data and optimiser settings, ``lr`` if
    given (else ``training.lr``). Every method then runs its own ``training.steps`` from the
    pre-trained weights (the EMA copy when enabled), so each method's budget is ``steps`` +
    ``training.steps`` steps, the pre-training counted once for all of them alike.
    """

    steps: int
    loss: LossConfig = field(default_factory=LossConfig)
    lr: float | None = None

    def __post_init__(self):
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        require(self.lr is None or self.lr > 0, "lr", "must be positive")


@dataclass(frozen=True)
class CompareLossesWorkflow:
    """Train ``experiment`` once per entry of ``methods`` (a loss each) and compare.

    ``sample_metrics`` adds the MMD between ``n_sample_metrics`` ancestral samples of each model and
    exact target samples. ``pretrain`` (optional) is a shared pre-training run whose checkpoint
    warm-starts every method (see :class:`PretrainConfig`).
    """

    workflow: Literal["compare_losses"]
    methods: dict[str, LossConfig]
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    description: str = ""
    sample_metrics: bool = False
    n_sample_metrics: int = 2048
    pretrain: PretrainConfig | None = None

    def __post_init__(self):
        require(len(self.methods) > 0, "methods", "name at least one method")
        if self.pretrain is not None:
            require("pretrain" not in self.methods, "methods.pretrain",
                    "'pretrain' names the shared pre-training run's directory; rename the method")
            require(self.experiment.training.warm_start is None, "pretrain",
                    "the pre-training run warm-starts every method; remove experiment.training.warm_start")
            problem = loss_process_mismatch(self.pretrain.loss, self.experiment.process.kind)
            require(problem is None, "pretrain.loss.dsm_weighting", problem or "")
        for name, loss in self.methods.items():
            require(name.replace("_", "").isalnum(), f"methods.{name}", "method names must be alphanumeric")
            problem = loss_process_mismatch(loss, self.experiment.process.kind)
            require(problem is None, f"methods.{name}.dsm_weighting", problem or "")
        require(not self.sample_metrics or self.experiment.process.kind != "interpolant", "sample_metrics",
                "sample metrics use ancestral diffusion sampling; not available for interpolants")


def run(workflow: CompareLossesWorkflow, out: str | Path, device: torch.device) -> dict:
    """Run (or resume) the workflow into ``out``; returns the headline results per method."""
    out = distributed.on_main(lambda: rundir.prepare(out, to_dict(workflow), seed=workflow.experiment.training.seed,
                                                     schema=type(workflow), device=str(device)))
    experiment = workflow.experiment
    if workflow.pretrain is not None:
        experiment = pretrain_experiment(experiment, workflow.pretrain, out / "pretrain", device)
    full = {name: _run_method(workflow, experiment, name, loss, out / name, device)
            for name, loss in workflow.methods.items()}
    return distributed.on_main(lambda: _report(workflow, full, out), share=False) or {}


def _report(workflow: CompareLossesWorkflow, full: dict, out: Path) -> dict:
    headline = {name: {k: res[k] for k in HEADLINE + ("mmd", "steps") if k in res} for name, res in full.items()}
    atomic.write_json(out / "results.json", headline)
    comparison_report(full, out / "report.png", title=workflow.description)
    return headline


def _run_method(workflow: CompareLossesWorkflow, experiment: ExperimentConfig, name: str, loss: LossConfig,
                out: Path, device) -> dict:
    results_path = out / "results.json"
    if results_path.exists():
        log.info("%s: finished earlier, reusing %s", name, results_path)
        return json.loads(results_path.read_text())
    config = dataclasses.replace(experiment, loss=loss)
    log.info("%s: training (%s)", name, loss)
    model = train_experiment(config, out, device)
    return distributed.on_main(lambda: _evaluate_method(workflow, model, config, results_path), share=False)


def _evaluate_method(workflow: CompareLossesWorkflow, model, config: ExperimentConfig, results_path: Path) -> dict:
    results = evaluate_experiment(model, config)
    pretrain_steps = workflow.pretrain.steps if workflow.pretrain is not None else 0
    results["steps"] = {"pretrain": pretrain_steps, "method": config.training.steps,
                        "total": pretrain_steps + config.training.steps}
    results["profiles"] = _profiles(model, config)
    if workflow.sample_metrics:
        results["mmd"] = _sample_mmd(model, config, workflow.n_sample_metrics)
    atomic.write_json(results_path, results)
    return results


def pretrain_experiment(experiment: ExperimentConfig, pre: PretrainConfig, out: Path, device,
                        train=train_experiment) -> ExperimentConfig:
    """Train (or resume, or reuse) the shared pre-training run ``pre`` of ``experiment`` in ``out``
    with ``train(config, out, device)``; returns ``experiment`` with that run's checkpoint as its warm
    start (also used by the ``smc_comparison``, ``boltzmann_generator`` and ``solvation`` workflows)."""
    training = dataclasses.replace(experiment.training, steps=pre.steps, lr=pre.lr or experiment.training.lr)
    log.info("pretrain: %d steps (%s)", pre.steps, pre.loss)
    train(dataclasses.replace(experiment, loss=pre.loss, training=training), out, device)
    warm = dataclasses.replace(experiment.training, warm_start=str(out / "checkpoint.pt"))
    return dataclasses.replace(experiment, training=warm)


def _profiles(model, config: ExperimentConfig) -> list[dict]:
    levels = evaluation_levels(model.n_levels, config.evaluation.n_levels)
    start = build_target(config.target)
    end = build_target(config.end_target) if config.end_target is not None else None
    return [mode_line_profile(model, start, end, int(levels[i])) for i in (0, len(levels) // 4)]


def _sample_mmd(model, config: ExperimentConfig, n: int) -> float:
    generator = torch.Generator(device=model.levels.device).manual_seed(config.evaluation.seed)
    samples = ancestral_sample(model, n, generator).samples.double().cpu()
    exact = build_target(config.target).sample(n, torch.Generator().manual_seed(config.evaluation.seed))
    return mmd(samples, exact)
