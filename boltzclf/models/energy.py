"""The learned time-dependent energy U_θ(t, x) with EDM preconditioning and free energies f.

With v(t) the process's input variance and w(t) its correction weight (METHOD.md §2.2):

    log p̃_θ(t, x) = −‖x‖²/(2v) − (d/2) log(2π v) + w(t) Φ_θ(c(t), x/√v),   Φ_θ(c, x̃) = −⟨NN_θ(c, x̃), x̃⟩

(a scalar-output network gives Φ_θ directly) and U_θ = −log p̃_θ. The first two terms are the normalised Gaussian N(0, v I); the network's output
layer starts at zero, so at initialisation the model *is* that Gaussian at every t. For diffusions
w = σ_d/σ(t) → 0 at large noise, so the model tends to the prior there. A dot-product energy vanishes
at x = 0 for every t, so it cannot carry a time-only offset: the per-level log-normalisers live in the
learnable vector f, with log p_θ(t_i, x) = log p̃_θ(t_i, x) − f_i and the gauge f[−1] = 0 at the
noisiest level, whose model is (to high accuracy) normalised.

Molecules ``(B, n_atoms, 3)`` with ``particles=True`` are centred (centre of geometry removed) and
have d = 3(n_atoms − 1) degrees of freedom.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class TimeDependentEnergy(nn.Module):
    """Interface and shared machinery of energies U(t, x) on a fixed grid of levels.

    Subclasses implement :meth:`log_prob_unnormalised`; scores, time derivatives, normalised
    level log-densities and the free-energy gauge come from here. Attributes every subclass sets:
    ``process``, ``levels`` ``(n_levels,)``, ``free_energies`` ``(n_levels,)``, ``sigma_data``,
    ``event_shape``, ``particles`` and ``dim`` (degrees of freedom).
    """

    def _init_geometry(self, process, levels: torch.Tensor, sigma_data: float, event_shape: tuple[int, ...],
                       particles: bool) -> None:
        if particles and (len(event_shape) != 2 or event_shape[1] != 3):
            raise ValueError(f"particles need event_shape (n_atoms, 3), got {event_shape}")
        self.process = process
        self.sigma_data = float(sigma_data)
        self.event_shape = tuple(event_shape)
        self.particles = particles
        self.dim = math.prod(event_shape) - (3 if particles else 0)
        self.register_buffer("levels", levels.detach().clone().to(torch.float32))

    @property
    def n_levels(self) -> int:
        return self.levels.shape[0]

    # ----- geometry ---------------------------------------------------------------------------------
    def centre(self, x: torch.Tensor) -> torch.Tensor:
        """Remove the centre of geometry of particle systems (identity for flat data)."""
        return x - x.mean(dim=-2, keepdim=True) if self.particles else x

    def noise_like(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise in the model's space (centred for particles), shaped like ``x``."""
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return self.centre(z)

    def log_prob_unnormalised(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p̃(t, x) = −U(t, x) for per-sample times ``t`` ``(B,)`` and ``x`` ``(B, *event)``."""
        raise NotImplementedError

    def energy(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """U(t, x) in kT (or nats for toy data), ``(B,)``."""
        return -self.log_prob_unnormalised(t, x)

    def log_prob(self, level: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Normalised log-density at grid levels: log p̃(t_i, x) − f_i for indices ``level`` ``(B,)``."""
        return self.log_prob_unnormalised(self.levels[level], x) - self.free_energies[level].to(x.dtype)

    def log_prob_and_score(self, t: torch.Tensor, x: torch.Tensor, create_graph: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """log p̃(t, x) ``(B,)`` and the score ∇ₓ log p̃ = −∇ₓU ``(B, *event)``.

        With ``create_graph=True`` the score is differentiable w.r.t. θ (for score-matching losses).
        """
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logp = self.log_prob_unnormalised(t, x)
            (score,) = torch.autograd.grad(logp.sum(), x, create_graph=create_graph)
        return logp, score

    def score(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """−∇ₓU(t, x), shape like ``x`` (no graph kept)."""
        return self.log_prob_and_score(t, x)[1].detach()

    def time_derivative(self, t: torch.Tensor, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """∂U(t, x)/∂t by autograd, ``(B,)``."""
        with torch.enable_grad():
            t = t.detach().to(x.dtype).requires_grad_(True)
            energy = self.energy(t, x)
            (dt,) = torch.autograd.grad(energy.sum(), t, create_graph=create_graph)
        return dt

    @torch.no_grad()
    def gauge_fix_(self) -> None:
        """Pin the noisiest level's free energy to 0: f ← f − f[−1] (and the end classes' g alike)."""
        shift = self.free_energies[-1].clone()
        self.free_energies -= shift
        if getattr(self, "end_free_energies", None) is not None:
            self.end_free_energies -= shift

    def at_time(self, t: float) -> "FixedTimeEnergy":
        """The energy at a fixed time as an :class:`~boltzclf.targets.EnergyTarget`."""
        return FixedTimeEnergy(self, t)


class EnergyModel(TimeDependentEnergy):
    """The learned U_θ(t, x): a network behind EDM energy preconditioning, plus free energies f.

    Interpolant models also hold ``end_free_energies`` (g_0, g_1): the normalisers of the true end
    densities when those take part in the classification as extra classes
    (:mod:`boltzclf.losses.endpoints`), in the gauge of f, so that g_0 − g_1 estimates ln Z_0 − ln Z_1.

    Parameters
    ----------
    network
        ``forward(c, x̃)`` with ``c`` ``(B,)`` and ``x̃`` ``(B, *event_shape)`` returning a vector field of
        ``x̃``'s shape (Φ = −⟨NN, x̃⟩), or, for networks with ``outputs_potential = True``, the scalar
        Φ itself as ``(B, 1)`` (invariant potentials, e.g. :class:`~boltzclf.models.pairwise.PairwisePotential`).
    process
        A :class:`~boltzclf.diffusion.LinearDiffusion` or :class:`~boltzclf.diffusion.StochasticInterpolant`.
    levels
        Ascending grid of times, ``(n_levels,)``.
    sigma_data
        Per-dimension standard deviation of the (centred) data.
    event_shape
        ``(D,)`` or ``(n_atoms, 3)``.
    particles
        Remove the centre of geometry from inputs and noise (molecules).
    """

    def __init__(self, network: nn.Module, process, levels: torch.Tensor, sigma_data: float,
                 event_shape: tuple[int, ...], particles: bool = False):
        super().__init__()
        self._init_geometry(process, levels, sigma_data, event_shape, particles)
        self.network = network
        cond = process.conditioning(levels.to(torch.float64))
        self.register_buffer("cond_mean", cond.mean().to(torch.float32))
        self.register_buffer("cond_std", cond.std().clamp_min(1e-12).to(torch.float32))
        self.free_energies = nn.Parameter(torch.zeros(len(levels)))
        if process.kind == "interpolant":  # normalisers g_0, g_1 of the true end densities as extra classes
            self.end_free_energies = nn.Parameter(torch.zeros(2))

    def log_prob_unnormalised(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p̃_θ(t, x) = −U_θ(t, x) for per-sample times ``t`` ``(B,)`` and ``x`` ``(B, *event)``."""
        x = self.centre(x)
        t = t.to(x.dtype)
        var = self.process.input_variance(t, self.sigma_data)
        x_in = x / var.sqrt().reshape((-1,) + (1,) * (x.dim() - 1))
        c = 0.3 * (self.process.conditioning(t) - self.cond_mean) / self.cond_std - 0.3
        out = self.network(c.to(x.dtype), x_in)
        phi = out[:, 0] if getattr(self.network, "outputs_potential", False) else -(out * x_in).flatten(1).sum(1)
        sq = x.flatten(1).pow(2).sum(1)
        gauss = -0.5 * sq / var - 0.5 * self.dim * torch.log(2.0 * math.pi * var)
        return gauss + self.process.energy_scale(t, self.sigma_data) * phi


class FixedTimeEnergy:
    """U(t, ·) at a fixed t, satisfying the EnergyTarget protocol (energies in the model's units)."""

    def __init__(self, model: TimeDependentEnergy, t: float):
        self.model = model
        self.t = float(t)
        self.event_shape = model.event_shape

    def _times(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.t, dtype=x.dtype, device=x.device)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """U(t, x), ``(B,)``."""
        return self.model.energy(self._times(x), x)

    def force(self, x: torch.Tensor) -> torch.Tensor:
        """−∇ₓU(t, x), like ``x``."""
        return self.model.score(self._times(x), x)
