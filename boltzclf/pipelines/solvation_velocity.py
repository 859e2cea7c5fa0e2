"""The velocity network of a learned solvation interpolant: trained once per path on the same aligned
end pairs as the energies (:mod:`boltzclf.models.velocity`), it transports the SMC particles between
the learned levels (``learned.smc.transport``, :mod:`boltzclf.pipelines.solvation_learned`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from boltzclf.core import distributed, rundir
from boltzclf.core.config import require, to_dict
from boltzclf.losses.velocity import velocity_matching_loss
from boltzclf.models.velocity import PairwiseVelocity, VelocityModel
from boltzclf.training.config import ExperimentConfig, TrainingConfig, build_process
from boltzclf.training.trainer import train


@dataclass(frozen=True)
class VelocityOptions:
    """The velocity network (``hidden`` × ``n_layers``, time embedding ``time_dim``) and its training
    (``steps`` of Adam at ``lr`` with a cosine decay, ``batch_size`` pairs, EMA ``ema``, ``seed``); t is
    drawn uniformly over the energy's level range."""

    hidden: int = 256
    n_layers: int = 3
    time_dim: int = 64
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    ema: float = 0.99
    seed: int = 0

    def __post_init__(self):
        for key in ("hidden", "n_layers", "steps", "batch_size"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(self.time_dim >= 2 and self.time_dim % 2 == 0, "time_dim", "must be even and >= 2")
        require(self.lr > 0, "lr", "must be positive")
        require(0 <= self.ema < 1, "ema", f"must be in [0, 1), got {self.ema}")


def train_velocity(options: VelocityOptions, experiment: ExperimentConfig, data, molecule, out: Path,
                   device: torch.device, inputs: tuple = ()) -> VelocityModel:
    """Train (or resume) the velocity of ``experiment``'s interpolant on ``data`` (aligned end pairs)
    into run directory ``out``; returns the model to use (EMA weights)."""
    grid = experiment.grid
    resolved = {"velocity": to_dict(options), "process": to_dict(experiment.process),
                "t_range": [grid.t_min, grid.t_max], "sigma_data": molecule.sigma_data}
    out = distributed.on_main(lambda: rundir.prepare(out, resolved, seed=options.seed, device=str(device),
                                                     inputs=inputs))
    torch.manual_seed(options.seed)
    network = PairwiseVelocity(molecule.n_atoms, molecule.bonds, molecule.pair_mean, molecule.pair_std,
                               options.hidden, options.n_layers, options.time_dim)
    model = VelocityModel(network, build_process(experiment.process), molecule.sigma_data).to(device)
    training = TrainingConfig(steps=options.steps, batch_size=options.batch_size, lr=options.lr,
                              lr_schedule="cosine", ema=options.ema, dataset_size=0,
                              checkpoint_every=max(1, options.steps // 4), seed=options.seed)
    loss = partial(velocity_matching_loss, t_range=(grid.t_min, grid.t_max))
    return train(model, loss, data, training, out, resolved, device).eval()
