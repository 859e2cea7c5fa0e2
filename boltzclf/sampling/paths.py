"""Sequences of target densities along a level grid ("paths") that SMC, AIS and replica exchange walk.

A path gives, for levels k = 0 … K−1 at ascending times, an unnormalised log-density log π̃_k(x) and
its gradient, plus the distribution the walk starts from at the top level. :class:`LearnedPath` uses a
learned energy's log p̃_θ(t_k, x) at every level and may replace its ends by true densities (any
:class:`~boltzclf.targets.EnergyTarget`): the final target at level 0 (the Boltzmann density), and for
interpolants the exactly sampled start at level K−1. Unknown per-level normalisers cancel in the
self-normalised weights, so the learned f is not needed here (it is for mixtures, see
:mod:`boltzclf.sampling.composition`).

Every path counts its evaluations in ``n_model_evals`` and ``n_target_evals`` (samples, not calls).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from boltzclf.sampling.mcmc import energy_and_force
from boltzclf.sampling.priors import GaussianPrior


def _split(x: torch.Tensor, chunk_size: int | None) -> list[torch.Tensor]:
    return [x] if chunk_size is None or x.shape[0] <= chunk_size else list(torch.split(x, chunk_size))


def score_and_log_prob(log_prob_fn, x: torch.Tensor, chunk_size: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_prob_fn(x) -> (B,)`` and its gradient, evaluated in chunks; returns ``(logp float64, grad)``."""
    logps, grads = [], []
    for part in _split(x, chunk_size):
        with torch.enable_grad():
            part = part.detach().requires_grad_(True)
            logp = log_prob_fn(part)
            (grad,) = torch.autograd.grad(logp.sum(), part)
        logps.append(logp.detach().to(torch.float64))
        grads.append(grad.detach())
    return torch.cat(logps), torch.cat(grads)


def target_log_prob_and_score(target, x: torch.Tensor, chunk_size: int | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """−u(x) and its gradient (the force) of an :class:`~boltzclf.targets.EnergyTarget`, in chunks
    (one evaluation per chunk where the target can give both at once)."""
    logps, grads = [], []
    for part in _split(x, chunk_size):
        energy, force = energy_and_force(target, part)
        logps.append(-energy.detach().to(torch.float64))
        grads.append(force.detach().to(part.dtype))
    return torch.cat(logps), torch.cat(grads)


def draw_start(start, n: int, generator: torch.Generator, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` draws of a start distribution (``sample``/``log_prob``) as ``dtype`` on ``device``, and
    their log-density (float64, evaluated at the cast points)."""
    x = start.sample(n, generator).to(device=device, dtype=dtype)
    return x, start.log_prob(x).to(torch.float64)


def hessian_of(log_prob_fn, x: torch.Tensor) -> torch.Tensor:
    """∇² log_prob_fn(x) for flat ``x`` ``(B, D)``: ``(B, D, D)`` by D backward passes."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_prob_fn(x).sum(), x, create_graph=True)
        rows = [torch.autograd.grad(grad[:, j].sum(), x, retain_graph=True)[0] for j in range(x.shape[1])]
    return torch.stack(rows, 1).detach()


class TargetStart:
    """The start of an interpolant path: exact samples of a normalised target with ``sample``, whose
    density then also serves as the top level's target."""

    def __init__(self, target):
        self.target = target

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.target.sample(n, generator)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -self.target.energy(x).detach().to(torch.float64)


class ConfinedPath:
    """A path whose final target is confined to a region R: SMC's Ẑ then estimates Z_R = ∫_R π̃_0.

    Level 0 is π̃_0(x) 1_R(x); every level k ≥ 1 is tilted towards R by log σ(c(x) / w_k), with c(x)
    a signed coordinate (positive inside R), σ the logistic function and w_k a width that shrinks with
    the level's noise. Two such walks, one per side of a divide, give the free-energy difference of the
    two sides as −ln(Ẑ_R / Ẑ_R'), without any particle having to cross into a rarely visited side.

    Any tilt that is positive everywhere leaves SMC exact; its shape sets the variance. The ideal tilt
    is Doob's h-transform h_k(x) = P(x_0 ∈ R | x_k = x), which is flat at high noise and sharpens to
    1_R as the noise vanishes; the logistic with w_k ∝ the noise level σ(t_k) imitates it. A move
    k+1 → k is weighted with π̃_k(x_k) L_k(x_{k+1} | x_k) / π̃_{k+1}(x_{k+1}), and the noising kernel
    L_k carries mass from inside R across its border. With the indicator at every level, π̃_{k+1} = 0
    there and that mass is lost outright (the weights are no longer unbiased); with a fixed sharp tilt
    it is recovered only by rare particles that come back, which a run of affordable size misses. Both
    put log Ẑ_R several kT low (``tests/sampling/test_confined_smc.py``).

    Parameters
    ----------
    path
        Any path (:class:`LearnedPath`, :class:`~boltzclf.sampling.bridge.BridgedPath`, …).
    region
        ``contains(x) -> (B,) bool`` (R) and ``coordinate(x) -> (B,)`` c, differentiable, c > 0 in R.
    widths
        ``(K,)`` w_k > 0 in units of c (``widths[0]`` is not used: level 0 is confined exactly).
    """

    def __init__(self, path, region, widths: torch.Tensor):
        if widths.shape != (path.n_levels,) or bool((widths[1:] <= 0).any()):
            raise ValueError(f"widths must be ({path.n_levels},) and positive above level 0")
        self.path = path
        self.region = region
        self.widths = widths.detach().to(torch.float64).cpu()
        self.space = path.space

    @property
    def n_levels(self) -> int:
        return self.path.n_levels

    @property
    def n_model_evals(self) -> int:
        return self.path.n_model_evals

    @property
    def n_target_evals(self) -> int:
        return self.path.n_target_evals

    def initial(self, n: int, generator: torch.Generator, dtype: torch.dtype, device):
        return self.path.initial(n, generator, dtype, device)

    def log_density(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log π̃_k(x) (B,) float64, ∇ log π̃_k(x) like x)``; −inf outside R at level 0."""
        logp, score = self.path.log_density(k, x)
        if k == 0:
            inside = self.region.contains(x).to(logp.device)
            return torch.where(inside, logp, torch.full_like(logp, -math.inf)), score
        width = float(self.widths[k])
        tilt, gradient = score_and_log_prob(lambda y: F.logsigmoid(self.region.coordinate(y) / width), x)
        return logp + tilt, score + gradient.to(score.dtype)

    def hessian(self, k: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("confined paths use kernels without Hessians")


class GroupedFrames:
    """The start of a walk from a fixed set of exact samples (e.g. held-out MD frames), dealt to the
    SMC groups without sharing: a random permutation splits the F frames into G blocks of F // G, and
    group g's n/G particles repeat its own block. The groups' Ẑ_g then rest on disjoint frames and stay
    independent, so the spread of the Ẑ_g (:func:`~boltzclf.sampling.smc.pooled_log_z`) is an honest
    error that includes the finite number of frames. ``energy`` is the frames' reduced energy u [kT]
    (``x -> (B,)``); ``log_prob`` is −u, unnormalised, so log Ẑ is relative to that density's Z.
    """

    def __init__(self, frames: torch.Tensor, energy, n_groups: int):
        if frames.shape[0] < n_groups:
            raise ValueError(f"{frames.shape[0]} frames cannot be dealt to {n_groups} groups")
        self.frames = frames
        self.energy = energy
        self.n_groups = n_groups

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if n % self.n_groups:
            raise ValueError(f"n ({n}) must be a multiple of the {self.n_groups} groups")
        block = self.frames.shape[0] // self.n_groups
        order = torch.randperm(self.frames.shape[0], generator=generator, device=generator.device)
        order = order[:block * self.n_groups].to(self.frames.device)
        blocks = order.reshape(self.n_groups, block)
        return self.frames[blocks[:, torch.arange(n // self.n_groups) % block].reshape(-1)]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -self.energy(x).detach().to(torch.float64)


class LearnedPath:
    """log π̃_k = log p̃_θ(t_k, ·) of an energy model, with optional true densities at the ends.

    Parameters
    ----------
    model
        A :class:`~boltzclf.models.energy.TimeDependentEnergy` (learned or exact).
    final_target
        EnergyTarget replacing level 0 (the true Boltzmann density), or None.
    start
        Where the walk starts at level K−1 (``sample(n, generator)``, ``log_prob(x)``): default the
        model's Gaussian prior N(0, v(t_{K−1}) I) for diffusions; for interpolants pass a
        :class:`TargetStart` of the t = 1 density, which then also serves as level K−1's target.
    score_only
        Interior levels contribute no density (log π̃_k = 0), only their scores for the kernels: the
        path of diffusion AIS.
    chunk_size
        Evaluate at most this many samples at once (memory).
    times
        Ascending level times ``(K,)`` to walk (default: the model's training grid). A finer grid
        shrinks each kernel's error; the energy is evaluated at any t, and f is not needed.
    """

    def __init__(self, model, final_target=None, start=None, score_only: bool = False,
                 chunk_size: int | None = None, times: torch.Tensor | None = None):
        self.model = model
        self.space = model
        self.times = (model.levels if times is None else times).detach().to(torch.float64).cpu()
        if len(self.times) < 2 or bool((self.times[1:] <= self.times[:-1]).any()):
            raise ValueError("a path needs at least 2 strictly ascending times")
        self.final_target = final_target
        self.score_only = score_only
        self.chunk_size = chunk_size
        if start is None:
            if model.process.kind == "interpolant":
                raise ValueError("an interpolant path needs start=TargetStart(t = 1 target)")
            start = GaussianPrior.for_model(model, float(self.times[-1]))
        self.start = start
        self.n_model_evals = 0
        self.n_target_evals = 0

    @property
    def n_levels(self) -> int:
        return len(self.times)

    def initial(self, n: int, generator: torch.Generator, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` start samples at level K−1 and their log-density under the start distribution."""
        return draw_start(self.start, n, generator, dtype, device)

    def _true_end(self, k: int):
        if k == 0 and self.final_target is not None:
            return self.final_target
        if k == self.n_levels - 1 and isinstance(self.start, TargetStart):
            return self.start.target
        return None

    def log_density(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log π̃_k(x) (B,) float64, ∇ log π̃_k(x) like x)``."""
        target = self._true_end(k)
        if target is not None:
            self.n_target_evals += x.shape[0]
            return target_log_prob_and_score(target, x, self.chunk_size)
        self.n_model_evals += x.shape[0]
        logp, score = score_and_log_prob(self._model_log_prob(k), x, self.chunk_size)
        return (torch.zeros_like(logp) if self.score_only else logp), score

    def _model_log_prob(self, k: int):
        t = float(self.times[k])

        def log_prob(x: torch.Tensor) -> torch.Tensor:
            return self.model.log_prob_unnormalised(torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device), x)

        return log_prob

    def hessian(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """∇² log π̃_k(x) for flat ``x`` ``(B, D)``: ``(B, D, D)``."""
        target = self._true_end(k)
        return hessian_of(lambda y: -target.energy(y) if target is not None else self._model_log_prob(k)(y), x)
