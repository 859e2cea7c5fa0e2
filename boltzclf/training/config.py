"""Experiment configuration (analytic targets or molecular trajectories), validated from YAML, and the builders
it drives."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from boltzclf.core.config import added_setting, require
from boltzclf.diffusion import (EDM, StochasticInterpolant, VariancePreserving, arcsine_grid, karras_grid,
                                log_snr_grid, uniform_grid)
from boltzclf.losses import LossConfig
from boltzclf.models import EnergyModel, TimeConditionedMLP
from boltzclf.models.egnn import EGNN
from boltzclf.models.pairwise import PairwisePotential
from boltzclf.targets.gmm import GaussianMixture, mog40, two_modes
from boltzclf.training.molecular_data import MolecularDataConfig, Molecule


@dataclass(frozen=True)
class TargetConfig:
    """An analytic Gaussian-mixture target (standardised). ``two_modes``: weights heavy_weight : 1 − heavy_weight
    (2:1 by default) at ∓separation·1."""

    name: Literal["two_modes", "mog40"] = "two_modes"
    dim: int = 2
    separation: float = 5.0
    seed: int = 0
    heavy_weight: float = 2.0 / 3.0

    def __post_init__(self):
        require(self.dim >= 1, "dim", f"must be >= 1, got {self.dim}")
        require(self.separation > 0, "separation", "must be positive")
        require(0.0 < self.heavy_weight < 1.0, "heavy_weight", f"must be in (0, 1), got {self.heavy_weight}")


@dataclass(frozen=True)
class ProcessConfig:
    """``vp`` (β from beta_min to beta_max), ``edm`` (σ(t) = t) or ``interpolant`` (γ_f √(t(1−t)))."""

    kind: Literal["vp", "edm", "interpolant"] = "vp"
    beta_min: float = 0.1
    beta_max: float = 20.0
    gamma_factor: float = 1.0

    def __post_init__(self):
        require(self.beta_min > 0, "beta_min", f"need 0 < beta_min < beta_max, got {self.beta_min}")
        require(self.beta_max > self.beta_min, "beta_max",
                f"need 0 < beta_min < beta_max, got {self.beta_min}, {self.beta_max}")
        require(self.gamma_factor > 0, "gamma_factor", "must be positive")
        defaults = ProcessConfig.__dataclass_fields__
        for key, used_by in (("beta_min", "vp"), ("beta_max", "vp"), ("gamma_factor", "interpolant")):
            require(self.kind == used_by or getattr(self, key) == defaults[key].default, key,
                    f"only used by kind: {used_by}, not {self.kind}; remove it")


@dataclass(frozen=True)
class GridConfig:
    """Level grid: ``uniform`` in t, ``karras`` (ρ; EDM, bounds are σ), ``log_snr`` (uniform log-SNR) or
    ``arcsine`` (dense near t = 0 and 1; interpolants)."""

    kind: Literal["uniform", "karras", "log_snr", "arcsine"] = "uniform"
    n_levels: int = 128
    t_min: float = 1e-4
    t_max: float = 0.9999
    rho: float = 7.0

    def __post_init__(self):
        require(self.n_levels >= 2, "n_levels", f"must be >= 2, got {self.n_levels}")
        require(self.t_min > 0, "t_min", f"need 0 < t_min < t_max, got {self.t_min}, {self.t_max}")
        require(self.t_max > self.t_min, "t_max", f"need 0 < t_min < t_max, got {self.t_min}, {self.t_max}")
        require(self.kind == "karras" or self.rho == GridConfig.rho, "rho", "only used by kind: karras; remove it")


@dataclass(frozen=True)
class ModelConfig:
    """The network behind the preconditioned energy.

    kind: ``mlp`` (residual time-conditioned MLP, dot-product energy; analytic targets), ``pairwise``
    (invariant potential of pair distances and dihedral chirality, :mod:`boltzclf.models.pairwise`;
    molecules) or ``egnn`` (E(3)-equivariant graph network with atom types and the bond graph,
    :mod:`boltzclf.models.egnn`; molecules). ``embedding`` is the time embedding of ``mlp`` and ``pairwise``.
    """

    kind: Literal["mlp", "pairwise", "egnn"] = "mlp"
    hidden: int = 128
    n_layers: int = 4
    time_dim: int = 64
    embedding: Literal["positional", "fourier"] = "positional"

    def __post_init__(self):
        require(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")
        require(self.n_layers >= 1, "n_layers", f"must be >= 1, got {self.n_layers}")
        require(self.time_dim >= 2 and self.time_dim % 2 == 0, "time_dim", "must be even and >= 2")
        require(self.kind != "egnn" or self.embedding == "positional", "embedding", "egnn uses positional only")


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation. ``dataset_size`` 0 draws fresh samples every step; ``ema`` 0 disables the EMA;
    ``ema_power`` γ > 0 makes its decay the power function min(ema, (1 − 1/n)^(γ+1)) of the run's step n
    (Karras et al. 2024; :class:`~boltzclf.training.ema.EMA`), 0 keeps it constant;
    ``lr_schedule`` ``cosine`` decays the learning rate from ``lr`` to 0 over ``steps``; ``shards``
    splits each batch into that many blocks with random streams of their own, the unit of work of
    distributed training (the number of processes must divide it; see :mod:`boltzclf.training.trainer`)."""

    steps: int = 2000
    batch_size: int = 512
    lr: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = 1.0
    ema: float = 0.999
    ema_power: float = added_setting(0.0)
    dataset_size: int = 60000
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0
    warm_start: str | None = None
    shards: int = 1

    def __post_init__(self):
        for key in ("steps", "batch_size", "checkpoint_every", "log_every", "shards"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(self.batch_size % self.shards == 0, "shards", f"must divide batch_size ({self.batch_size})")
        require(self.lr > 0, "lr", "must be positive")
        require(self.grad_clip > 0, "grad_clip", "must be positive")
        require(0 <= self.ema < 1, "ema", f"must be in [0, 1), got {self.ema}")
        require(self.ema_power >= 0, "ema_power", f"must be >= 0, got {self.ema_power}")
        require(self.dataset_size >= 0, "dataset_size", "must be >= 0")


@dataclass(frozen=True)
class EvaluationConfig:
    """Metrics: ``n_samples`` exact samples per level on ``n_levels`` evenly spaced grid levels."""

    n_samples: int = 4096
    n_levels: int = 16
    seed: int = 1234

    def __post_init__(self):
        require(self.n_samples >= 16, "n_samples", "must be >= 16")
        require(self.n_levels >= 2, "n_levels", "must be >= 2")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one training run: on an analytic ``target`` or on molecular ``data``."""

    target: TargetConfig = field(default_factory=TargetConfig)
    data: MolecularDataConfig | None = None
    end_target: TargetConfig | None = None
    process: ProcessConfig = field(default_factory=ProcessConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self):
        interpolant = self.process.kind == "interpolant"
        if self.end_target is not None:
            require(self.end_target.dim == self.target.dim, "end_target.dim", "must equal target.dim")
        if self.data is not None:  # a molecular interpolant's two ensembles come from its workflow
            require(self.target == TargetConfig(), "target", "give either target (analytic) or data (molecular)")
            require(self.end_target is None, "end_target", "is for analytic targets; molecular data has none")
        else:
            require(interpolant == (self.end_target is not None), "end_target",
                    "is required for (and only for) process.kind: interpolant")
            require(self.model.kind == "mlp", "model.kind", f"{self.model.kind} needs molecular data (data:)")
        problem = grid_process_mismatch(self.grid, self.process, self.sigma_data)
        require(problem is None, problem[0] if problem else "grid", problem[1] if problem else "")
        problem = loss_process_mismatch(self.loss, self.process.kind)
        require(problem is None, "loss.dsm_weighting", problem or "")
        require(self.loss.endpoints == 0 or interpolant, "loss.endpoints",
                "the end densities as classes need an interpolant (process.kind: interpolant)")


    @property
    def sigma_data(self) -> float | None:
        """σ_d: 1 for the standardised analytic targets, the data's (None until computed) for molecules."""
        return SIGMA_DATA if self.data is None else self.data.sigma_data


#: Per-dimension standard deviation σ_d of the (standardised) analytic targets, as the model assumes.
SIGMA_DATA = 1.0
#: The noisiest level of a diffusion must have σ(t_max) ≥ PRIOR_SIGMA_RATIO · σ_d (see grid_process_mismatch).
PRIOR_SIGMA_RATIO = 10.0


def grid_process_mismatch(grid: GridConfig, process: ProcessConfig, sigma_data: float | None = SIGMA_DATA
                          ) -> tuple[str, str] | None:
    """``(key, why)`` if the level grid does not fit the process, else None.

    ``sigma_data`` None (molecular data whose σ_d is not computed yet) skips the prior check.

    Rules: ``karras`` grids are σ levels, so only for ``edm`` (where t = σ); ``log_snr`` grids only for
    diffusions; ``vp`` is defined on t ≤ 1 and the interpolant on t < 1 (its noise γ vanishes at 1). For
    diffusions the last level must be the normalised prior the model reduces to and samplers start
    from: σ(t_max) ≥ 10·σ_d, so the learned correction's weight σ_d/σ is at most 0.1 there and the
    true marginal's standardised higher cumulants (its departure from N(0, α²(σ_d² + σ²))) shrink
    like (σ_d/σ)⁴ ≤ 1e-4. For ``edm``
    (σ = t, σ_d = 1) that is t_max ≥ 10 (EDM's usual σ_max is 80); for ``vp`` with β 0.1 → 20,
    t_max ≥ 0.68.
    """
    if grid.kind == "karras" and process.kind != "edm":
        return "grid.kind", (f"karras grids are EDM noise levels σ; use uniform or log_snr for "
                             f"process.kind: {process.kind}")
    if grid.kind == "log_snr" and process.kind == "interpolant":
        return "grid.kind", "log_snr grids need a diffusion process"
    if grid.kind == "arcsine" and process.kind != "interpolant":
        return "grid.kind", "arcsine grids are for interpolants (t in (0, 1))"
    if process.kind == "vp" and grid.t_max > 1.0:
        return "grid.t_max", f"the VP process is defined on t <= 1, got {grid.t_max}"
    if process.kind == "interpolant" and grid.t_max >= 1.0:
        return "grid.t_max", f"the interpolant's noise vanishes at t = 1; need t_max < 1, got {grid.t_max}"
    if process.kind != "interpolant" and sigma_data is not None:
        sigma_max = float(build_process(process).sigma(torch.tensor(grid.t_max, dtype=torch.float64)))
        needed = PRIOR_SIGMA_RATIO * sigma_data
        if sigma_max < needed:
            hint = (f"e.g. grid: {{kind: karras, t_min: {0.002 * sigma_data:g}, t_max: {80 * sigma_data:g}}}"
                    if process.kind == "edm" else "raise t_max towards 1 or beta_max")
            return "grid.t_max", (f"the last level must be the normalised prior: {process.kind} needs σ(t_max) >= "
                                  f"{needed:g} (10·σ_d), got σ({grid.t_max:g}) = {sigma_max:.3g}; {hint}")
    return None


def loss_process_mismatch(loss: LossConfig, process_kind: str) -> str | None:
    """Why ``loss`` cannot train with a process of kind ``process_kind`` (None if it can)."""
    if process_kind == "interpolant" and loss.dsm_weighting == "edm":
        return "the edm weighting needs a diffusion; use uniform, linear or square for interpolants"
    return None


def build_target(config: TargetConfig) -> GaussianMixture:
    """The standardised mixture named by ``config`` (float64, CPU)."""
    if config.name == "two_modes":
        return two_modes(config.dim, config.separation, heavy_weight=config.heavy_weight)
    return mog40(config.dim, seed=config.seed)


def build_process(config: ProcessConfig):
    """The noising process named by ``config``."""
    if config.kind == "vp":
        return VariancePreserving(config.beta_min, config.beta_max)
    if config.kind == "edm":
        return EDM()
    return StochasticInterpolant(config.gamma_factor)


def build_grid(config: GridConfig, process) -> torch.Tensor:
    """The ascending level grid, ``(n_levels,)`` float64."""
    if config.kind == "uniform":
        return uniform_grid(config.t_min, config.t_max, config.n_levels)
    if config.kind == "karras":
        return karras_grid(config.t_min, config.t_max, config.n_levels, config.rho)
    if config.kind == "arcsine":
        return arcsine_grid(config.t_min, config.t_max, config.n_levels)
    return log_snr_grid(process, config.t_min, config.t_max, config.n_levels)


def build_model(config: ExperimentConfig, molecule: Molecule | None = None) -> EnergyModel:
    """A freshly initialised energy model (the exact Gaussian base at every level).

    Molecular configs (``config.data``) need ``molecule``; the model then works on centred
    ``(n_atoms, 3)`` configurations with σ_d = ``molecule.sigma_data``.
    """
    process = build_process(config.process)
    levels = build_grid(config.grid, process)
    m = config.model
    if config.data is None:
        net = TimeConditionedMLP(config.target.dim, m.hidden, m.n_layers, m.time_dim, m.embedding)
        return EnergyModel(net, process, levels, sigma_data=SIGMA_DATA, event_shape=(config.target.dim,))
    if molecule is None:
        raise ValueError("a molecular experiment needs its Molecule (atom types, bonds, statistics)")
    n = molecule.n_atoms
    if m.kind == "pairwise":
        net = PairwisePotential(n, molecule.bonds, molecule.pair_mean, molecule.pair_std, m.hidden, m.n_layers,
                                m.time_dim, m.embedding)
    elif m.kind == "egnn":
        net = EGNN(molecule.atom_types, molecule.bonds, m.hidden, m.n_layers, m.time_dim)
    else:
        net = TimeConditionedMLP(3 * n, m.hidden, m.n_layers, m.time_dim, m.embedding)
    return EnergyModel(net, process, levels, sigma_data=molecule.sigma_data, event_shape=(n, 3), particles=True)
