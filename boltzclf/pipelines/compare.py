"""The ``compare_losses`` workflow: train one model per loss with the same budget, evaluate, report.

Each method runs in ``OUT/<method>/`` (its own resumable run directory); ``OUT/results.json`` holds
the headline metrics per method and ``OUT/report.png`` the figure. A method whose
``OUT/<method>/results.json`` exists is not retrained, so a killed workflow resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from boltzclf.core import atomic, rundir
from boltzclf.core.config import require, to_dict
from boltzclf.estimators.mmd import mmd
from boltzclf.evaluation.gmm_metrics import evaluation_levels
from boltzclf.evaluation.profiles import mode_line_profile
from boltzclf.losses import LossConfig
from boltzclf.pipelines.experiment import evaluate_experiment, train_experiment
from boltzclf.plots.comparison import comparison_report
from boltzclf.sampling.ancestral import ancestral_sample
from boltzclf.training.config import ExperimentConfig, build_target

log = logging.getLogger(__name__)

HEADLINE = ("mode_weight_error", "ess_mean", "clf_loss", "clf_loss_exact", "fisher_mean", "r2_mean")


@dataclass(frozen=True)
class CompareLossesWorkflow:
    """Train ``experiment`` once per entry of ``methods`` (a loss each) and compare.

    ``sample_metrics`` adds the MMD between ``n_sample_metrics`` ancestral samples of each model and
    exact target samples.
    """

    workflow: Literal["compare_losses"]
    methods: dict[str, LossConfig]
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    description: str = ""
    sample_metrics: bool = False
    n_sample_metrics: int = 2048

    def __post_init__(self):
        require(len(self.methods) > 0, "methods", "name at least one method")
        for name in self.methods:
            require(name.replace("_", "").isalnum(), f"methods.{name}", "method names must be alphanumeric")
        require(not self.sample_metrics or self.experiment.process.kind != "interpolant", "sample_metrics",
                "sample metrics use ancestral diffusion sampling; not available for interpolants")


def run(workflow: CompareLossesWorkflow, out: str | Path, device: torch.device) -> dict:
    """Run (or resume) the workflow into ``out``; returns the headline results per method."""
    out = rundir.prepare(out, to_dict(workflow), seed=workflow.experiment.training.seed, device=str(device))
    full = {name: _run_method(workflow, name, loss, out / name, device) for name, loss in workflow.methods.items()}
    headline = {name: {k: res[k] for k in HEADLINE + ("mmd",) if k in res} for name, res in full.items()}
    atomic.write_json(out / "results.json", headline)
    comparison_report(full, out / "report.png", title=workflow.description)
    return headline


def _run_method(workflow: CompareLossesWorkflow, name: str, loss: LossConfig, out: Path, device) -> dict:
    results_path = out / "results.json"
    if results_path.exists():
        log.info("%s: finished earlier, reusing %s", name, results_path)
        return json.loads(results_path.read_text())
    config = dataclasses.replace(workflow.experiment, loss=loss)
    log.info("%s: training (%s)", name, loss)
    model = train_experiment(config, out, device)
    results = evaluate_experiment(model, config)
    results["profiles"] = _profiles(model, config)
    if workflow.sample_metrics:
        results["mmd"] = _sample_mmd(model, config, workflow.n_sample_metrics)
    atomic.write_json(results_path, results)
    return results


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
