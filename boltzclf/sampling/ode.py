"""Probability-flow ODE: deterministic transport between levels, with exact log-densities (likelihoods).

For a linear diffusion X_t = α_t X_0 + γ_t Z the forward SDE is dX = f(t) X dt + g(t) dW with
f = α̇/α and g² = 2γγ̇ − 2(α̇/α)γ² = 2α²σσ̇ (so that d(γ²)/dt = 2fγ² + g²). Its probability-flow ODE,
which has the same marginals p_t, is

    dx/dt = b(t, x) = f(t) x − ½ g(t)² s(t, x),        s = ∇ₓ log p̃ = −∇ₓU  (the model's score).

For a stochastic interpolant X_t = (1−t)X_0 + tX_1 + γ(t)Z the drift is b = v(t, x) − γγ̇ s(t, x), with
v(t, x) = E[X_1 − X_0 | X_t = x] a velocity field passed in by the caller (for Gaussian mixtures:
:func:`boltzclf.targets.gmm.marginal_velocity`).

Log-densities. Along a solution x_t of dx/dt = b, the density q_t of the transported distribution obeys
d/dt log q_t(x_t) = −∇·b(t, x_t), so between any two times (either direction)

    log q_{t_to}(x_{t_to}) = log q_{t_from}(x_{t_from}) − ∫_{t_from}^{t_to} ∇·b(t, x_t) dt.

Sampling integrates from the noisiest level down (t_start → t_end, dt < 0) and adds that change to the
start density; :func:`probability_flow_log_prob` integrates data up (t_end → t_start) and subtracts it
from the start density at the end point. q is the density of the *pushed-forward start distribution*;
it equals the model's p_t only in so far as the start distribution is the model's p_{t_start}. The
change of log-density is accumulated in float64 as a second ODE state whatever the model's dtype.

Particles (``model.particles``, events ``(n_atoms, 3)``): the flow lives on the centred subspace. Points,
drift and Hutchinson probes are centred, and the divergence is that of x ↦ P b(P x) (P the centring
projection), i.e. the divergence on the subspace; log-densities are with respect to Lebesgue measure on
that d = 3(n_atoms − 1) dimensional subspace (orthonormal coordinates), like the model's own prior.

Divergence: ``"exact"`` loops over the D coordinates (one backward pass each, vectorised across the
batch; for small D); ``"hutchinson"`` uses ε^T (∂b/∂x) ε with Rademacher or Gaussian probes drawn once
per sample from the passed generator and held fixed along the path (FFJORD), which keeps the ODE
smooth for adaptive solvers and makes the log-density estimate unbiased (the path itself does not
depend on the probes). Randomness comes only from the passed ``torch.Generator``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torchdiffeq import odeint

from boltzclf.sampling.priors import GaussianPrior

logger = logging.getLogger(__name__)

FIXED_STEP_METHODS = ("euler", "midpoint", "heun3", "rk4")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FlowSolver:
    """How to integrate the probability-flow ODE.

    Attributes
    ----------
    method : one of :data:`FIXED_STEP_METHODS` or :data:`ADAPTIVE_METHODS` (torchdiffeq names).
    steps : fixed-step methods only: ``None`` steps on the model's level grid (the levels strictly
        between the two ends, plus the ends); an int takes that many uniform steps in t.
    rtol, atol : adaptive methods only: tolerances (torchdiffeq's mixed RMS norm over the batch).
    divergence : ``"exact"`` or ``"hutchinson"``.
    n_probes : Hutchinson probes per sample (averaged).
    probe : ``"rademacher"`` or ``"gaussian"``.
    dtype : dtype in which the model is evaluated (a learned model's parameters must have it);
        ``None``: the model's parameter dtype, or float64 for a model without parameters (exact models).
        The ODE state (points and log-density change) is always float64. With float32 models prefer
        fixed steps or rtol, atol ≥ 1e-5: float32 round-off stalls tighter adaptive control.
    """

    method: str = "dopri5"
    steps: int | None = None
    rtol: float = 1e-5
    atol: float = 1e-5
    divergence: str = "exact"
    n_probes: int = 1
    probe: str = "rademacher"
    dtype: torch.dtype | None = None

    def __post_init__(self):
        if self.method not in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
            raise ValueError(f"unknown ODE method {self.method!r}; choose one of "
                             f"{FIXED_STEP_METHODS + ADAPTIVE_METHODS}")
        if self.steps is not None and (self.method in ADAPTIVE_METHODS or int(self.steps) < 1):
            raise ValueError(f"steps={self.steps!r} needs a fixed-step method and a positive integer")
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"rtol and atol must be positive, got {self.rtol}, {self.atol}")
        if self.divergence not in ("exact", "hutchinson"):
            raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {self.divergence!r}")
        if self.n_probes < 1:
            raise ValueError(f"n_probes must be at least 1, got {self.n_probes}")
        if self.probe not in ("rademacher", "gaussian"):
            raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {self.probe!r}")

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE_METHODS


@dataclass
class FlowPath:
    """One integration of the probability-flow ODE from ``times[0]`` to ``times[-1]``.

    Attributes
    ----------
    x : (N, *event) points at the final time, in the input's dtype.
    delta_log_q : (N,) float64 log q_{t_to}(x_{t_to}) − log q_{t_from}(x_{t_from}) = −∫ ∇·b dt.
    n_function_evaluations : calls of the drift + divergence, each one batched energy gradient plus
        D (exact) or ``n_probes`` (Hutchinson) backward passes.
    times : float64 step grid in integration order: the fixed grid, or the accepted steps of an
        adaptive method (each step's start time, then the final time).
    """

    x: torch.Tensor
    delta_log_q: torch.Tensor
    n_function_evaluations: int
    times: torch.Tensor


@dataclass
class FlowResult:
    """Paired points at the data end (t_end) and the noise end (t_start) with their log-densities.

    Attributes
    ----------
    samples : (N, *event) points at t_end (the samples drawn, or the points whose likelihood was asked).
    log_prob : (N,) float64 log q_{t_end}(samples) in nats (on the centred subspace for particles).
    latents : (N, *event) the corresponding points at t_start.
    latent_log_prob : (N,) float64 log-density of the start distribution at ``latents``.
    n_function_evaluations, times : see :class:`FlowPath` (``times`` in integration order: from t_start
        down to t_end for sampling, from t_end up to t_start for likelihoods).
    """

    samples: torch.Tensor
    log_prob: torch.Tensor
    latents: torch.Tensor
    latent_log_prob: torch.Tensor
    n_function_evaluations: int
    times: torch.Tensor


def probability_flow(model, x: torch.Tensor, t_from: float, t_to: float, generator: torch.Generator | None = None,
                     *, velocity: Velocity | None = None, solver: FlowSolver = FlowSolver()) -> FlowPath:
    """Transport points ``x`` at time ``t_from`` to ``t_to`` along the probability-flow ODE (either direction).

    Parameters
    ----------
    model
        A time-dependent energy (``energy(t, x)``, ``process``, ``levels``, ``event_shape``, ``particles``).
    x
        ``(N, *event)`` points at ``t_from`` (centred first for particles).
    t_from, t_to
        Start and end times (model time units); for interpolants both inside (0, 1).
    generator
        Source of the Hutchinson probes (required for ``divergence="hutchinson"``).
    velocity
        Interpolants only (required there): v(t, x) with per-sample ``t`` ``(N,)`` and ``x`` ``(N, *event)``,
        differentiable in x.
    solver
        Integration and divergence settings.

    Returns
    -------
    FlowPath
        ``x`` at ``t_to`` and ``delta_log_q`` = log q_{t_to}(x_{t_to}) − log q_{t_from}(x_{t_from}).
    """
    t_from, t_to = float(t_from), float(t_to)
    _check_inputs(model, x, t_from, t_to, velocity)
    if solver.divergence == "hutchinson" and generator is None:
        raise ValueError("Hutchinson divergence needs a torch.Generator for its probes")
    dtype = solver.dtype or _model_dtype(model)
    device = model.levels.device
    x = model.centre(x.to(device))
    probes = _probes(model, x.shape, solver, generator, dtype, device) if solver.divergence == "hutchinson" else None
    rhs = _AugmentedDrift(model, velocity, probes, dtype, (min(t_from, t_to), max(t_from, t_to)), solver.adaptive)
    t_span = torch.tensor([t_from, t_to], dtype=torch.float64, device=device)
    if solver.adaptive:  # land exactly on t_to instead of stepping past it and interpolating
        options = {"step_t": t_span[1:]}
    else:
        grid = _fixed_grid(model, t_from, t_to, solver.steps).to(device)
        options = {"grid_constructor": lambda func, y0, t: grid}
    state = (x.detach().to(torch.float64), torch.zeros(x.shape[0], dtype=torch.float64, device=device))
    with torch.no_grad():
        x_path, delta_path = odeint(rhs, state, t_span, method=solver.method, rtol=solver.rtol, atol=solver.atol,
                                    options=options)
    times = grid if not solver.adaptive else torch.tensor(rhs.accepted + [t_to], dtype=torch.float64)
    logger.debug("probability flow %.4g -> %.4g: %d function evaluations, %d steps", t_from, t_to, rhs.nfe,
                 len(times) - 1)
    return FlowPath(x_path[-1].to(x.dtype), delta_path[-1], rhs.nfe, times.cpu())


def probability_flow_sample(model, n: int, generator: torch.Generator, *, prior=None, t_start: float | None = None,
                            t_end: float | None = None, velocity: Velocity | None = None,
                            solver: FlowSolver = FlowSolver()) -> FlowResult:
    """Draw ``n`` samples at ``t_end`` by pushing ``prior`` samples at ``t_start`` through the flow.

    Parameters
    ----------
    model, velocity, solver
        As in :func:`probability_flow`.
    n
        Number of samples.
    generator
        Source of the prior draws and Hutchinson probes.
    prior
        The start distribution (``sample(n, generator)``, ``log_prob(x)``); default
        ``GaussianPrior.for_model(model, t_start)`` (required for interpolants).
    t_start, t_end
        Default: the model's last and first grid levels.

    Returns
    -------
    FlowResult
        ``samples`` and ``log_prob`` = log q_{t_end}(samples) = log prior(latent) − ∫_{t_start}^{t_end} ∇·b dt.
    """
    t_start, t_end = _default_times(model, t_start, t_end)
    prior = prior if prior is not None else GaussianPrior.for_model(model, t_start)
    latents = prior.sample(n, generator).to(model.levels.device)
    latent_log_prob = prior.log_prob(latents).to(torch.float64)
    path = probability_flow(model, latents, t_start, t_end, generator, velocity=velocity, solver=solver)
    return FlowResult(path.x, latent_log_prob + path.delta_log_q, model.centre(latents), latent_log_prob,
                      path.n_function_evaluations, path.times)


def probability_flow_log_prob(model, x: torch.Tensor, generator: torch.Generator | None = None, *, prior=None,
                              t_start: float | None = None, t_end: float | None = None,
                              velocity: Velocity | None = None, solver: FlowSolver = FlowSolver()) -> FlowResult:
    """Log-likelihood log q_{t_end}(x) of given points under the flow of ``prior`` (the inverse direction).

    Integrates ``x`` from ``t_end`` up to ``t_start`` and returns
    log q_{t_end}(x) = log prior(x_{t_start}) + ∫_{t_end}^{t_start} ∇·b dt. Arguments as in
    :func:`probability_flow_sample`; ``generator`` is needed only for Hutchinson probes. With the same
    solver settings this inverts :func:`probability_flow_sample` up to the integration error.
    """
    t_start, t_end = _default_times(model, t_start, t_end)
    prior = prior if prior is not None else GaussianPrior.for_model(model, t_start)
    path = probability_flow(model, x, t_end, t_start, generator, velocity=velocity, solver=solver)
    latent_log_prob = prior.log_prob(path.x).to(torch.float64)
    return FlowResult(model.centre(x), latent_log_prob - path.delta_log_q, path.x, latent_log_prob,
                      path.n_function_evaluations, path.times)


# ----- internals ---------------------------------------------------------------------------------------
class _AugmentedDrift:
    """Right-hand side (b(t, x), −∇·b(t, x)) of the augmented ODE, on float64 states."""

    def __init__(self, model, velocity: Velocity | None, probes: torch.Tensor | None, dtype: torch.dtype,
                 t_range: tuple[float, float], record_steps: bool):
        self.model = model
        self.t_range = t_range
        self.velocity = velocity
        self.probes = probes
        self.dtype = dtype
        self.nfe = 0
        self.accepted: list[float] = []
        if record_steps:  # torchdiffeq calls this on adaptive solvers with each accepted step's start time
            self.callback_accept_step = lambda t0, y0, dt: self.accepted.append(float(t0))

    def __call__(self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        x = state[0]
        self.nfe += 1
        # Steps land on the ends (step_t / fixed grid); only the adaptive solvers' initial-step heuristic
        # probes a time beyond them, where e.g. a VP or EDM process is undefined: evaluate it at the end.
        t = t.clamp(*self.t_range)
        with torch.enable_grad():
            x_in = x.detach().to(self.dtype).requires_grad_(True)
            drift = self._drift(t, x_in)
            div = self._divergence(drift, x_in)
        return drift.detach().to(x.dtype), -div.detach().to(torch.float64)

    def _drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """b(t, P x), centred, with a graph to x."""
        model, process = self.model, self.model.process
        xc = model.centre(x)
        t64 = t.to(torch.float64)
        times = torch.full((x.shape[0],), float(t64), dtype=self.dtype, device=x.device)
        (score,) = torch.autograd.grad(-model.energy(times, xc).sum(), x, create_graph=True)
        if process.kind == "interpolant":
            gamma_gamma_dot = float(process.gamma(t64) * process.gamma_dot(t64))
            drift = self.velocity(times, xc) - gamma_gamma_dot * score
        else:
            f = process.alpha_dot(t64) / process.alpha(t64)
            half_g2 = process.gamma(t64) * process.gamma_dot(t64) - f * process.gamma(t64) ** 2
            drift = float(f) * xc - float(half_g2) * score
        return model.centre(drift)

    def _divergence(self, drift: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """∇·b per sample, ``(B,)``: exact trace of ∂b/∂x, or the Hutchinson average over the fixed probes."""
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if not drift.requires_grad:  # a drift that does not depend on x
            return div
        if self.probes is None:
            flat = drift.flatten(1)
            for i in range(flat.shape[1]):
                (grad,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True, allow_unused=True)
                if grad is not None:
                    div = div + grad.flatten(1)[:, i]
            return div
        for probe in self.probes:
            (grad,) = torch.autograd.grad((drift * probe).sum(), x, retain_graph=True, allow_unused=True)
            if grad is not None:
                div = div + (grad * probe).flatten(1).sum(1)
        return div / len(self.probes)


def _probes(model, shape, solver: FlowSolver, generator: torch.Generator, dtype, device) -> torch.Tensor:
    """``n_probes`` fixed probes per sample, ``(n_probes, N, *event)``, centred for particles (E[εεᵀ] = P)."""
    full = (solver.n_probes,) + tuple(shape)
    if solver.probe == "rademacher":
        eps = torch.randint(0, 2, full, generator=generator, device=generator.device).to(dtype) * 2.0 - 1.0
    else:
        eps = torch.randn(full, generator=generator, dtype=dtype, device=generator.device)
    return model.centre(eps.to(device))


def _fixed_grid(model, t_from: float, t_to: float, steps: int | None) -> torch.Tensor:
    """Step times from t_from to t_to (float64): uniform, or the model's levels strictly inside plus the ends."""
    if steps is not None:
        grid = torch.linspace(t_from, t_to, int(steps) + 1, dtype=torch.float64)
    else:
        lo, hi = min(t_from, t_to), max(t_from, t_to)
        levels = model.levels.detach().to(torch.float64).cpu()
        margin = 1e-6 * (hi - lo)
        inner = levels[(levels > lo + margin) & (levels < hi - margin)]
        grid = torch.cat([torch.tensor([lo], dtype=torch.float64), inner, torch.tensor([hi], dtype=torch.float64)])
        if t_from > t_to:
            grid = torch.flip(grid, dims=(0,))
    grid[0], grid[-1] = t_from, t_to
    return grid


def _default_times(model, t_start: float | None, t_end: float | None) -> tuple[float, float]:
    levels = model.levels.detach().to(torch.float64)
    t_start = float(levels[-1]) if t_start is None else float(t_start)
    t_end = float(levels[0]) if t_end is None else float(t_end)
    if not t_end < t_start:
        raise ValueError(f"need t_end < t_start (data end below the noise end), got t_end={t_end}, t_start={t_start}")
    return t_start, t_end


def _check_inputs(model, x: torch.Tensor, t_from: float, t_to: float, velocity) -> None:
    if tuple(x.shape[1:]) != tuple(model.event_shape) or x.dim() != len(model.event_shape) + 1:
        raise ValueError(f"x must have shape (N, *{tuple(model.event_shape)}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"x has {int((~torch.isfinite(x)).sum())} non-finite entries")
    if not (math.isfinite(t_from) and math.isfinite(t_to)) or t_from == t_to:
        raise ValueError(f"need distinct finite times, got t_from={t_from}, t_to={t_to}")
    if model.process.kind == "interpolant":
        if velocity is None:
            raise ValueError("an interpolant's probability flow needs velocity(t, x) = E[X_1 − X_0 | X_t = x]")
        if not (0.0 < min(t_from, t_to) and max(t_from, t_to) < 1.0):
            raise ValueError(f"interpolant times must lie in (0, 1) (γγ̇ is 0·∞ at the ends), got {t_from}, {t_to}")
    elif velocity is not None:
        raise ValueError("velocity is only used by interpolants; a diffusion's drift is f(t) x − ½ g(t)² s(t, x)")


def _model_dtype(model) -> torch.dtype:
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float64
