"""One training run on an analytic target: build, train (resumable), evaluate."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from boltzclf.core import atomic, rundir
from boltzclf.core.config import from_mapping, to_dict
from boltzclf.evaluation.gmm_metrics import evaluate
from boltzclf.losses import build_loss
from boltzclf.training import checkpoint
from boltzclf.training.config import ExperimentConfig, build_model, build_target
from boltzclf.training.data import MixtureData
from boltzclf.training.trainer import train

log = logging.getLogger(__name__)


def train_experiment(config: ExperimentConfig, out: str | Path, device: torch.device,
                     on_step: Callable[[int], None] | None = None):
    """Train the model described by ``config`` into run directory ``out`` (resuming if possible).

    Returns the model to evaluate (EMA weights when enabled).
    """
    resolved = to_dict(config)
    inputs = (config.training.warm_start,) if config.training.warm_start else ()
    out = rundir.prepare(out, resolved, seed=config.training.seed, device=str(device), inputs=inputs)
    torch.manual_seed(config.training.seed)
    model = build_model(config).to(device)
    data = MixtureData(build_target(config.target), _end_target(config), config.training.dataset_size,
                       config.training.seed, device)
    return train(model, build_loss(config.loss), data, config.training, out, resolved, device, on_step)


def evaluate_experiment(model, config: ExperimentConfig) -> dict:
    """Metrics of a trained model against its exact target (see :mod:`boltzclf.evaluation.gmm_metrics`)."""
    ev = config.evaluation
    return evaluate(model, build_target(config.target), _end_target(config), ev.n_samples, ev.n_levels, ev.seed)


def load_trained(run_dir: str | Path, device: torch.device):
    """The evaluation model (EMA weights if present) and config of a finished run directory."""
    path = Path(run_dir) / "checkpoint.pt"
    state = checkpoint.load(path)
    config = from_mapping(ExperimentConfig, state["config"], f"{path}: config")
    model = build_model(config)
    checkpoint.load_weights(model, state["ema"] if state["ema"] is not None else state["model"], path)
    if state["step"] < config.training.steps:
        log.warning("%s: checkpoint at step %d of %d (run unfinished)", path, state["step"], config.training.steps)
    return model.to(device).eval(), config


def run_experiment(config: ExperimentConfig, out: str | Path, device: torch.device) -> dict:
    """Train then evaluate; writes ``out/results.json`` and returns the metrics."""
    model = train_experiment(config, out, device)
    results = evaluate_experiment(model, config)
    atomic.write_json(Path(out) / "results.json", results)
    return results


def _end_target(config: ExperimentConfig):
    return build_target(config.end_target) if config.end_target is not None else None
