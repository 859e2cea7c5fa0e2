"""One training run on an analytic target or a molecular dataset: build, train (resumable), evaluate."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from boltzclf.core import atomic, distributed, rundir
from boltzclf.core.config import from_mapping, to_dict
from boltzclf.core.errors import ConfigError
from boltzclf.evaluation.gmm_metrics import evaluate
from boltzclf.losses import LossConfig, build_loss
from boltzclf.openmm.system import load_system
from boltzclf.training import checkpoint
from boltzclf.training.config import ExperimentConfig, build_model, build_target, grid_process_mismatch
from boltzclf.training.data import MixtureData
from boltzclf.training.equivalent_atoms import system_permutations
from boltzclf.training.molecular_data import MolecularData, describe_molecule, load_dataset
from boltzclf.training.trainer import train

log = logging.getLogger(__name__)


def train_experiment(config: ExperimentConfig, out: str | Path, device: torch.device,
                     on_step: Callable[[int], None] | None = None):
    """Train the model described by ``config`` into run directory ``out`` (resuming if possible).

    Returns the model to evaluate (EMA weights when enabled). A molecular run stores the σ_d it
    computed from its training frames in its config (``data.sigma_data``).
    """
    inputs = (config.training.warm_start,) if config.training.warm_start else ()
    if config.data is not None and config.process.kind == "interpolant":
        raise ConfigError("process.kind: interpolant on molecular data needs two ensembles (t = 0 and t = 1); "
                          "the solvation workflow trains those (boltzclf run workflows/aldp_solvation.yaml)")
    if config.data is None:
        molecule = None
        data = MixtureData(build_target(config.target), _end_target(config), config.training.dataset_size,
                           config.training.seed, device)
    else:
        system = load_system(config.data.system)
        dataset = load_dataset(config.data, system)
        config = with_sigma_data(config, dataset.sigma_data)
        molecule = describe_molecule(system, dataset, dataset.atoms, dataset.sigma_data)
        permutations = system_permutations(system, dataset.train) if config.data.permute_equivalent else None
        data = MolecularData(dataset, config.data.rotations, device, permutations=permutations)
        inputs += (config.data.system,)
    return train_on(config, data, molecule, out, device, inputs, on_step)


def train_on(config: ExperimentConfig, data, molecule, out: str | Path, device: torch.device, inputs: tuple = (),
             on_step: Callable[[int], None] | None = None, end_energies=None):
    """Train a fresh model of ``config`` (with ``molecule`` for molecular data) on batches of ``data``
    into run directory ``out`` (resuming if possible); returns the model to evaluate.
    ``end_energies``: the interpolant's true end energies (u_0, u_1) for ``loss.endpoints``."""
    resolved = to_dict(config)
    loss = build_loss(config.loss, end_energies)  # refused before the run directory exists
    # rank 0 makes (or checks) the run directory, the others wait for it
    out = distributed.on_main(lambda: rundir.prepare(out, resolved, seed=config.training.seed, device=str(device),
                                                     schema=type(config), inputs=inputs))
    torch.manual_seed(config.training.seed)
    model = build_model(config, molecule).to(device)
    return train(model, loss, data, config.training, out, resolved, device, on_step)


def with_sigma_data(config: ExperimentConfig, sigma_data: float) -> ExperimentConfig:
    """``config`` with ``data.sigma_data`` set, checked against the level grid (the prior needs σ_max ≥ 10 σ_d).

    Raises
    ------
    ConfigError
        If the grid's noisiest level is not a normalised prior for this σ_d.
    """
    problem = grid_process_mismatch(config.grid, config.process, sigma_data)
    if problem is not None:
        raise ConfigError(f"{problem[0]}: {problem[1]} (σ_d = {sigma_data:.4g} nm from {config.data.trajectory})")
    return dataclasses.replace(config, data=dataclasses.replace(config.data, sigma_data=sigma_data))


def build_trained_model(config: ExperimentConfig):
    """An untrained model of ``config``'s architecture, ready for a checkpoint's weights (molecular
    configs must hold ``data.sigma_data``; the data statistics come from the weights)."""
    if config.data is None:
        return build_model(config)
    system = load_system(config.data.system)
    atoms = np.array(config.data.atoms if config.data.atoms is not None else range(system.n_atoms))
    return build_model(config, describe_molecule(system, None, atoms, config.data.sigma_data))


def evaluate_experiment(model, config: ExperimentConfig) -> dict:
    """Metrics of a trained model: against its exact target (see :mod:`boltzclf.evaluation.gmm_metrics`),
    or, for molecular data, its validation losses."""
    if config.data is not None:
        return validation_losses(model, config)
    ev = config.evaluation
    return evaluate(model, build_target(config.target), _end_target(config), ev.n_samples, ev.n_levels, ev.seed)


def _data_paths_from_run(config: ExperimentConfig, run_dir: Path) -> ExperimentConfig:
    """``config`` with its relative data paths (system, trajectory, topology) that do not exist from here made
    absolute against the directory the run was started from (``metadata.json``'s ``cwd``), so that a
    run can be sampled from anywhere."""
    metadata = run_dir / "metadata.json"
    if config.data is None or not metadata.exists():
        return config
    started_in = json.loads(metadata.read_text()).get("cwd")
    if started_in is None:  # runs made before the directory was recorded
        return config

    def resolved(value):
        if value is None or Path(value).is_absolute() or Path(value).exists():
            return value
        return str(Path(started_in) / value)

    return dataclasses.replace(config, data=dataclasses.replace(
        config.data, system=resolved(config.data.system), trajectory=resolved(config.data.trajectory),
        topology=resolved(config.data.topology)))


def load_trained(run_dir: str | Path, device: torch.device):
    """The evaluation model (EMA weights if present) and config of a finished run directory."""
    path = Path(run_dir) / "checkpoint.pt"
    state = checkpoint.load(path)
    config = _data_paths_from_run(from_mapping(ExperimentConfig, state["config"], f"{path}: config"), Path(run_dir))
    model = build_trained_model(config)
    checkpoint.load_weights(model, state["ema"] if state["ema"] is not None else state["model"], path)
    if state["step"] < config.training.steps:
        log.warning("%s: checkpoint at step %d of %d (run unfinished)", path, state["step"], config.training.steps)
    return model.to(device).eval(), config


def run_experiment(config: ExperimentConfig, out: str | Path, device: torch.device) -> dict:
    """Train then evaluate; writes ``out/results.json`` and returns the metrics.

    Under ``torchrun`` every rank trains and rank 0 alone evaluates and writes (the others return
    an empty mapping).
    """
    model = train_experiment(config, out, device)
    if not distributed.is_main():
        return {}
    results = evaluate_experiment(model, config)
    atomic.write_json(Path(out) / "results.json", results)
    return results


@torch.no_grad()
def validation_losses(model, config: ExperimentConfig, batch_size: int = 256) -> dict:
    """Mean DSM loss and binary adjacent-level classification loss on the held-out frames.

    Noise and levels come from ``evaluation.seed``, so two models of the same config are scored on the
    same draws. ``val_clf`` is the cross-entropy with the learned f (ln 2 = no better than chance).
    """
    system = load_system(config.data.system)
    frames = load_dataset(config.data, system).validation[:config.evaluation.n_samples]
    if frames.shape[0] == 0:
        return {"val_dsm": None, "val_clf": None, "n_validation": 0}
    param = next(model.parameters())
    loss = build_loss(LossConfig(kind="diffclf", pairs="adjacent"))
    generator = torch.Generator(device=param.device).manual_seed(config.evaluation.seed)
    totals = {"dsm": 0.0, "clf": 0.0}
    for batch in frames.split(batch_size):
        with torch.enable_grad():
            out = loss(model, (batch.to(device=param.device, dtype=param.dtype),), generator)
        for key in totals:
            totals[key] += float(out[key].sum())
    n = frames.shape[0]
    return {"val_dsm": totals["dsm"] / n, "val_clf": totals["clf"] / n, "n_validation": n}


def _end_target(config: ExperimentConfig):
    return build_target(config.end_target) if config.end_target is not None else None
