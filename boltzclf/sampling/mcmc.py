"""Metropolis-adjusted Langevin (MALA) step, step-size adaptation and energy evaluation helpers.

The MALA proposal from ``x`` with step size h is y = x + h ∇log π(x) + √(2h) ξ, ξ ~ N(0, I), so

    log q(y | x) = −‖y − x − h ∇log π(x)‖² / (4h) + const,

and y is accepted with probability min(1, π(y) q(x | y) / (π(x) q(y | x))); the constants cancel
because the forward and reverse moves of a walker share its h. Log-ratios are computed in float64.
A proposal whose position, log-density or gradient is not finite is rejected and flagged.

Particle systems may restrict the noise with ``project`` (e.g. removing the centre of geometry). It
must be an orthogonal linear projection P (idempotent, symmetric) and the gradients should lie in its
range (true for translation-invariant energies); the proposal densities then use the projected
residuals, i.e. Gaussian densities on the subspace.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

LogDensity = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
Projection = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class MALAResult:
    """Outcome of one MALA step for ``B`` walkers.

    Attributes
    ----------
    x : (B, *event) positions after the step (the proposal where accepted, else the old ones).
    logp : (B,) unnormalised log target at ``x``.
    grad : like ``x``, ∇log target at ``x``.
    accepted : (B,) bool.
    log_accept_ratio : (B,) float64, log of the Metropolis–Hastings ratio (−inf for non-finite proposals).
    nonfinite : (B,) bool, proposals rejected because position, log-density or gradient was not finite.
    """

    x: torch.Tensor
    logp: torch.Tensor
    grad: torch.Tensor
    accepted: torch.Tensor
    log_accept_ratio: torch.Tensor
    nonfinite: torch.Tensor


def per_walker(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A scalar or ``(B,)`` value reshaped to broadcast against ``like`` ``(B, *event)``."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.dim() == 0:
        return value
    if value.shape != like.shape[:1]:
        raise ValueError(f"per-walker value has shape {tuple(value.shape)}, expected ({like.shape[0]},)")
    return value.reshape((-1,) + (1,) * (like.dim() - 1))


def _log_proposal(to: torch.Tensor, start: torch.Tensor, grad_start: torch.Tensor, step: torch.Tensor,
                  project: Projection | None) -> torch.Tensor:
    """log q(to | start) up to the walker's constant: −‖to − start − h·grad‖²/(4h), ``(B,)`` float64."""
    residual = to - start - step * grad_start
    if project is not None:
        residual = project(residual)
    sq = residual.flatten(1).to(torch.float64).pow(2).sum(1)
    return -sq / (4.0 * step.flatten().to(torch.float64) if step.dim() else 4.0 * float(step))


def mala_step(log_density: LogDensity, x: torch.Tensor, logp: torch.Tensor, grad: torch.Tensor,
              step_size: torch.Tensor | float, generator: torch.Generator,
              project: Projection | None = None) -> MALAResult:
    """One Metropolis-adjusted Langevin step for all walkers.

    Parameters
    ----------
    log_density
        ``x -> (logp (B,), grad like x)``: unnormalised log target and its gradient (e.g. −u and the
        force of an energy target, see :func:`target_log_density`).
    x, logp, grad
        Current positions ``(B, *event)``, their log-densities ``(B,)`` and gradients (like ``x``).
    step_size
        h > 0, a float or a per-walker ``(B,)`` tensor (units of ``x``² per unit of log-density).
    generator
        Source of all randomness (proposal noise, then the uniform acceptance draws).
    project
        Optional orthogonal projection applied to the noise and the proposal residuals.

    Returns
    -------
    MALAResult
    """
    h = per_walker(step_size, x)
    if bool((h <= 0).any()):
        raise ValueError("MALA step size must be positive")
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if project is not None:
        noise = project(noise)
    y = x + h * grad + torch.sqrt(2.0 * h) * noise
    logp_y, grad_y = log_density(y)
    nonfinite = ~(torch.isfinite(y).flatten(1).all(1) & torch.isfinite(logp_y)
                  & torch.isfinite(grad_y).flatten(1).all(1))
    log_ratio = (logp_y.to(torch.float64) - logp.to(torch.float64)
                 + _log_proposal(x, y, grad_y, h, project) - _log_proposal(y, x, grad, h, project))
    log_ratio = torch.where(nonfinite | torch.isnan(log_ratio), torch.full_like(log_ratio, -math.inf), log_ratio)
    uniform = torch.rand(x.shape[0], generator=generator, dtype=torch.float64, device=x.device)
    accepted = torch.log(uniform) < log_ratio
    keep = accepted.reshape((-1,) + (1,) * (x.dim() - 1))
    return MALAResult(
        x=torch.where(keep, y, x),
        logp=torch.where(accepted, logp_y.to(logp.dtype), logp),
        grad=torch.where(keep, grad_y.to(grad.dtype), grad),
        accepted=accepted,
        log_accept_ratio=log_ratio,
        nonfinite=nonfinite,
    )


def adaptive_mala_moves(log_density: LogDensity, x: torch.Tensor, logp: torch.Tensor, grad: torch.Tensor,
                        steps: int, step_size: float, generator: torch.Generator, project: Projection | None = None,
                        target_acceptance: float = 0.574):
    """``steps`` MALA steps of one population, the float step size h adapted after each towards
    ``target_acceptance`` from the population's mean acceptance (the moves of an SMC sampler or an
    annealing level). Returns ``(x, logp, grad, mean acceptance, adapted h)``.

    Walkers outside the target's support (log-density −inf, e.g. particles outside the region of a
    confined SMC level, whose weight is already 0) are moved like the others but left out of the
    acceptance: any proposal into the support would count as accepted and inflate the step size. With
    no walker inside the support the acceptance is NaN and h is kept.
    """
    rates = []
    for _ in range(steps):
        live = torch.isfinite(logp)
        move = mala_step(log_density, x, logp, grad, step_size, generator, project=project)
        x, logp, grad = move.x, move.logp, move.grad
        rates.append(float(move.accepted[live].double().mean()) if bool(live.any()) else math.nan)
        if not math.isnan(rates[-1]):
            step_size = float(adapt_step_size(step_size, rates[-1], target_acceptance, rate=0.5))
    measured = [rate for rate in rates if not math.isnan(rate)]
    return x, logp, grad, sum(measured) / len(measured) if measured else math.nan, step_size


def adapt_step_size(step_size: torch.Tensor | float, acceptance: torch.Tensor | float, target: float = 0.574,
                    rate: float = 0.05) -> torch.Tensor | float:
    """Multiplicative update h ← h·exp(rate·(acceptance − target)).

    ``acceptance`` is a float, or ``(B,)`` (accepted flags or running rates). A float ``step_size`` is
    updated with the mean acceptance and stays a float; a ``(B,)`` tensor is updated per walker.
    Use only during warm-up: adapting during production breaks the Markov property.
    """
    if isinstance(step_size, torch.Tensor) and step_size.dim() > 0:
        acc = torch.as_tensor(acceptance, device=step_size.device).to(step_size.dtype)
        return step_size * torch.exp(rate * (acc - target))
    acc = float(torch.as_tensor(acceptance, dtype=torch.float64).mean())
    return float(step_size) * math.exp(rate * (acc - target))


def energy_and_force(target, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduced energy ``(B,)`` and force ``-∇u`` (like ``x``) of an EnergyTarget, in one pass if possible.

    Uses ``target.energy_and_force`` when present, else autograd through ``target.energy`` (one
    evaluation for the OpenMM/torch bridges, analytic and learned energies), else ``target.force``.
    """
    if hasattr(target, "energy_and_force"):
        energy, force = target.energy_and_force(x)
        return energy.detach(), force.detach().to(x.dtype)
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        energy = target.energy(xr)
        if energy.requires_grad:
            (grad,) = torch.autograd.grad(energy.sum(), xr)
            return energy.detach(), -grad.detach().to(x.dtype)
    return energy.detach(), target.force(x).detach().to(x.dtype)


def evaluate_active(target, x: torch.Tensor, active: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`energy_and_force` on the walkers where ``active`` ``(B,)`` is true and ``x`` is finite.

    The others get energy +inf and zero force without being evaluated (the bridges reject NaN
    coordinates), so one bad walker never stops the batch.
    """
    ok = torch.isfinite(x.flatten(1).sum(1))  # one reduction: any NaN/inf entry makes the sum non-finite
    if active is not None:
        ok = ok & active
    if bool(ok.all()):
        return energy_and_force(target, x)
    energy = torch.full(x.shape[:1], math.inf, dtype=x.dtype, device=x.device)
    force = torch.zeros_like(x)
    if bool(ok.any()):
        e, f = energy_and_force(target, x[ok])
        energy[ok] = e.to(x.dtype)
        force[ok] = f.to(x.dtype)
    return energy, force


def target_log_density(target) -> LogDensity:
    """The ``log_density`` callable of an EnergyTarget: ``x -> (−u(x), force(x))``.

    Walkers with non-finite coordinates get −inf without being evaluated.
    """

    def log_density(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        energy, force = evaluate_active(target, x)
        return -energy, force

    return log_density
