"""Train DSM and DSM + DiffCLF energies on TwoModes (2:1) through the Python API and compare the mode
weights each model implies. Run: python examples/mode_weights.py  (about 2 minutes on 2 CPU cores)."""
import dataclasses
import tempfile

import torch

from boltzclf.losses import LossConfig
from boltzclf.pipelines.experiment import evaluate_experiment, train_experiment
from boltzclf.training.config import ExperimentConfig, GridConfig, ModelConfig, TargetConfig, TrainingConfig

base = ExperimentConfig(
    target=TargetConfig(name="two_modes", dim=4),
    grid=GridConfig(kind="log_snr", n_levels=32, t_min=1e-3),
    model=ModelConfig(hidden=64, n_layers=3),
    training=TrainingConfig(steps=2000, batch_size=512, lr=2e-3, ema=0.99),
)
for name, loss in {"dsm": LossConfig("dsm", k=2), "diffclf": LossConfig("diffclf", k=2)}.items():
    config = dataclasses.replace(base, loss=loss)
    model = train_experiment(config, tempfile.mkdtemp(prefix=f"{name}-"), torch.device("cpu"))
    metrics = evaluate_experiment(model, config)
    weights = ", ".join(f"{w:.3f}" for w in metrics["mode_weights"])
    print(f"{name:8s} mode weights [{weights}] (true 0.667, 0.333); ESS/N mean {metrics['ess_mean']:.3f}")
