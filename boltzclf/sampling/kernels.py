"""Markov kernels between neighbouring grid levels, each returning its sample *and* its log-density.

Levels are indexed k = 0 … K−1 with ascending times t_0 < … < t_{K−1}. A *reverse* kernel
M_k(x_k | x_{k+1}) moves a sample one level towards the data using the score at (t_{k+1}, x_{k+1});
a *forward* kernel L_k(x_{k+1} | x_k) moves it one level towards the noise. SMC, diffusion AIS and
replica exchange weight paths with the ratio L_k/M_k, so both densities must be exact for the
Gaussians actually drawn.

Linear diffusions (x_t = α_{s→t} x_s + γ_{s→t} ε between s < t; METHOD.md §1):

* forward: the exact noising transition N(x_{k+1}; α_{s→t} x_k, γ²_{s→t} I);
* ``"ddpm"``: q(x_s | x_t) = ∫ q(x_s | x_t, x0) p(x0 | x_t) dx0 with p(x0 | x_t) replaced by the Gaussian
  N(x̂0, V) of the same mean and covariance. With ṽ = (1/γ_s² + α²_{s→t}/γ²_{s→t})⁻¹ and
  c = ṽ α_s/γ_s², the kernel is N(c x̂0 + ṽ α_{s→t} x_t/γ²_{s→t}, ṽ I + c² V), where x̂0 =
  (x_t + γ_t² ∇log p_t)/α_t (Tweedie). ``posterior_variance="isotropic"`` takes V = (1/σ_d² + α_t²/γ_t²)⁻¹ I,
  the posterior variance of x0 for data N(μ, σ_d² I); ``"hessian"`` takes the second-order Tweedie
  V = (γ_t²/α_t²)(I + γ_t² ∇²log p_t), exact for any Gaussian data (flat data only: D backward passes).
  Either way the kernel is the exact reverse transition when the data are Gaussian (isotropic: with
  variance σ_d²), unlike the x̂0 plug-in (V = 0), which under-disperses;
* ``"ei"`` (exponential integrator): the reverse SDE with the score frozen at (t, x_t) in unscaled
  coordinates, N((x_t + γ²_{s→t} ∇log p_t)/α_{s→t}, γ²_{s→t}/α²_{s→t} I).

Stochastic interpolants (x_t = (1−t) x0 + t x1 + γ(t) z) have no Markov transition; the sampling SDE
dX = [b + ε s] dt + √(2ε) dW with drift b = v − γγ̇ s (velocity v, score s; METHOD.md §2.3) gives the
Euler–Maruyama kernels: forward N(x_k + h(b + ε s)(t_k, x_k), 2εh I) and reverse
N(x_{k+1} − h(b − ε s)(t_{k+1}, x_{k+1}), 2εh I), with h = t_{k+1} − t_k.

Without any transport, :class:`IdentityKernels` leave the samples where they are: the incremental
weight is then the ratio of the two levels' densities at the same point, and MCMC moves at each level
do the moving (annealed importance sampling / SMC samplers; Neal 2001, Del Moral et al. 2006).

Particle systems live on the centred subspace: means and noise are centred and densities count
d = 3(n_atoms − 1) dimensions (``space.dim``).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

KINDS = ("ddpm", "ei")
POSTERIOR_VARIANCES = ("isotropic", "hessian")


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, variance: float, space) -> torch.Tensor:
    """log N(x; mean, variance·I) on the model's space (``space.centre``, ``space.dim``), ``(B,)`` float64."""
    diff = space.centre(x - mean).flatten(1).to(torch.float64)
    return -0.5 * diff.pow(2).sum(1) / variance - 0.5 * space.dim * math.log(2.0 * math.pi * variance)


def _gaussian_draw(mean: torch.Tensor, variance: float, space, generator) -> torch.Tensor:
    noise = space.centre(torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device))
    return mean + math.sqrt(variance) * noise


class DiffusionKernels:
    """Forward and reverse kernels of a linear diffusion on a level grid.

    Parameters
    ----------
    process
        A :class:`~boltzclf.diffusion.LinearDiffusion`.
    times
        Ascending level times ``(K,)``.
    space
        Geometry: ``centre(x)`` and ``dim`` (an energy model provides both).
    sigma_data
        Per-dimension data standard deviation σ_d (isotropic posterior variance).
    kind
        ``"ddpm"`` or ``"ei"``.
    posterior_variance
        ``"isotropic"`` or ``"hessian"`` (ddpm only; then ``reverse`` needs ``hessian``).
    """

    def __init__(self, process, times: torch.Tensor, space, sigma_data: float = 1.0, kind: str = "ddpm",
                 posterior_variance: str = "isotropic"):
        if process.kind == "interpolant":
            raise ValueError("DiffusionKernels need a linear diffusion; use InterpolantKernels for interpolants")
        if kind not in KINDS:
            raise ValueError(f"unknown reverse kernel {kind!r}; use one of {KINDS}")
        if posterior_variance not in POSTERIOR_VARIANCES:
            raise ValueError(f"unknown posterior_variance {posterior_variance!r}; use one of {POSTERIOR_VARIANCES}")
        if posterior_variance == "hessian" and getattr(space, "particles", False):
            raise ValueError("posterior_variance='hessian' needs flat data; use 'isotropic' for particles")
        self.process = process
        self.times = times.detach().to(torch.float64).cpu()
        self.space = space
        self.sigma_data = float(sigma_data)
        self.kind = kind
        self.posterior_variance = posterior_variance
        self.needs_hessian = kind == "ddpm" and posterior_variance == "hessian"
        self._steps = [self._step_coefficients(k) for k in range(len(self.times) - 1)]

    def _step_coefficients(self, k: int) -> dict[str, float]:
        s, t = self.times[k], self.times[k + 1]
        p = self.process
        a_st, g_st = p.transition(s, t)
        return {"a_st": float(a_st), "g2_st": float(g_st) ** 2, "alpha_s": float(p.alpha(s)),
                "g2_s": float(p.gamma(s)) ** 2, "alpha_t": float(p.alpha(t)), "g2_t": float(p.gamma(t)) ** 2}

    def _coefficients(self, k: int) -> dict[str, float]:
        """The step k → k+1's coefficients (computed once per kernel)."""
        return self._steps[k]

    # ----- forward ------------------------------------------------------------------------------------
    def forward(self, k: int, x: torch.Tensor, generator: torch.Generator,
                score: torch.Tensor | None = None) -> torch.Tensor:
        """x_{k+1} ~ N(α_{s→t} x_k, γ²_{s→t} I) (``score`` unused: the transition is exact)."""
        c = self._coefficients(k)
        return _gaussian_draw(c["a_st"] * x, c["g2_st"], self.space, generator)

    def forward_log_prob(self, k: int, x: torch.Tensor, x_next: torch.Tensor,
                         score: torch.Tensor | None = None) -> torch.Tensor:
        """log L_k(x_next | x), ``(B,)`` float64 (``score`` unused: the transition is exact)."""
        c = self._coefficients(k)
        return gaussian_log_prob(x_next, c["a_st"] * x, c["g2_st"], self.space)

    # ----- reverse ------------------------------------------------------------------------------------
    def _reverse_moments(self, k: int, x_next: torch.Tensor, score_next: torch.Tensor,
                         hessian: torch.Tensor | None):
        """Mean like ``x_next`` and covariance: a float (isotropic) or ``(B, D, D)``."""
        c = self._coefficients(k)
        if self.kind == "ei":
            mean = (x_next + c["g2_st"] * score_next) / c["a_st"]
            return mean, c["g2_st"] / c["a_st"] ** 2
        x0_hat = (x_next + c["g2_t"] * score_next) / c["alpha_t"]
        v_tilde = 1.0 / (1.0 / c["g2_s"] + c["a_st"] ** 2 / c["g2_st"])
        weight = v_tilde * c["alpha_s"] / c["g2_s"]
        mean = weight * x0_hat + (v_tilde * c["a_st"] / c["g2_st"]) * x_next
        if not self.needs_hessian:
            v0 = 1.0 / (1.0 / self.sigma_data**2 + c["alpha_t"] ** 2 / c["g2_t"])
            return mean, v_tilde + weight**2 * v0
        if hessian is None:
            raise ValueError("posterior_variance='hessian' needs the Hessian of log p at the current level")
        eye = torch.eye(hessian.shape[-1], dtype=torch.float64, device=hessian.device)
        v0 = (c["g2_t"] / c["alpha_t"] ** 2) * (eye + c["g2_t"] * hessian.to(torch.float64))
        v0 = 0.5 * (v0 + v0.transpose(-1, -2))
        evals, evecs = torch.linalg.eigh(v0)  # a covariance is PSD: clip what round-off or a bad model breaks
        v0 = evecs @ torch.diag_embed(evals.clamp_min(0.0)) @ evecs.transpose(-1, -2)
        return mean, v_tilde * eye + weight**2 * v0

    def reverse(self, k: int, x_next: torch.Tensor, score_next: torch.Tensor, generator: torch.Generator,
                hessian: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw x_k ~ M_k(· | x_{k+1}); returns ``(x_k, log M_k(x_k | x_{k+1}))``, the latter ``(B,)`` float64.

        ``score_next`` is ∇log p at (t_{k+1}, x_{k+1}); ``hessian`` ``(B, D, D)`` its Jacobian (hessian mode).
        """
        mean, cov = self._reverse_moments(k, x_next, score_next, hessian)
        if isinstance(cov, float):
            x = _gaussian_draw(mean, cov, self.space, generator)
            return x, gaussian_log_prob(x, mean, cov, self.space)
        chol = torch.linalg.cholesky(cov)
        eps = torch.randn(mean.shape, generator=generator, dtype=torch.float64, device=mean.device)
        x = mean + (chol @ eps[..., None])[..., 0].to(mean.dtype)
        return x, _full_gaussian_log_prob(x, mean, chol)

    def reverse_log_prob(self, k: int, x: torch.Tensor, x_next: torch.Tensor, score_next: torch.Tensor,
                         hessian: torch.Tensor | None = None) -> torch.Tensor:
        """log M_k(x | x_next), ``(B,)`` float64."""
        mean, cov = self._reverse_moments(k, x_next, score_next, hessian)
        if isinstance(cov, float):
            return gaussian_log_prob(x, mean, cov, self.space)
        return _full_gaussian_log_prob(x, mean, torch.linalg.cholesky(cov))


def _full_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    diff = (x - mean).to(torch.float64)
    white = torch.linalg.solve_triangular(chol, diff[..., None], upper=False)[..., 0]
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (white.pow(2).sum(-1) + log_det + diff.shape[-1] * math.log(2.0 * math.pi))


class InterpolantKernels:
    """Euler–Maruyama kernels of the interpolant SDE with diffusion coefficient ε.

    Parameters
    ----------
    interpolant
        A :class:`~boltzclf.diffusion.StochasticInterpolant`.
    times
        Ascending level times ``(K,)`` in (0, 1).
    space
        Geometry (``centre``, ``dim``).
    velocity
        v(t, x) ≈ E[x1 − x0 | x_t = x]: callable ``(t (B,), x) -> like x``.
    epsilon
        Diffusion coefficient ε > 0 of the sampling SDE.
    """

    needs_hessian = False

    def __init__(self, interpolant, times: torch.Tensor, space,
                 velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], epsilon: float = 1e-2):
        if interpolant.kind != "interpolant":
            raise ValueError("InterpolantKernels need a stochastic interpolant")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.interpolant = interpolant
        self.times = times.detach().to(torch.float64).cpu()
        self.space = space
        self.velocity = velocity
        self.epsilon = float(epsilon)

    def _drift(self, k: int, x: torch.Tensor, score: torch.Tensor, sign: float) -> torch.Tensor:
        """b ± ε s at (t_k, x) with b = v − γγ̇ s."""
        t = self.times[k]
        gg = float(self.interpolant.gamma(t) * self.interpolant.gamma_dot(t))
        times = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        return self.space.centre(self.velocity(times, x) + (sign * self.epsilon - gg) * score)

    def _step(self, k: int) -> float:
        return float(self.times[k + 1] - self.times[k])

    def forward(self, k: int, x: torch.Tensor, generator: torch.Generator,
                score: torch.Tensor | None = None) -> torch.Tensor:
        """x_{k+1} ~ N(x + h(b + ε s)(t_k, x), 2εh I); needs the score at (t_k, x)."""
        h = self._step(k)
        return _gaussian_draw(x + h * self._drift(k, x, score, +1.0), 2.0 * self.epsilon * h, self.space, generator)

    def forward_log_prob(self, k: int, x: torch.Tensor, x_next: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """log L_k(x_next | x) with the score at (t_k, x), ``(B,)`` float64."""
        h = self._step(k)
        return gaussian_log_prob(x_next, x + h * self._drift(k, x, score, +1.0), 2.0 * self.epsilon * h, self.space)

    def _reverse_mean(self, k: int, x_next: torch.Tensor, score_next: torch.Tensor) -> torch.Tensor:
        return x_next - self._step(k) * self._drift(k + 1, x_next, score_next, -1.0)

    def reverse(self, k: int, x_next: torch.Tensor, score_next: torch.Tensor, generator: torch.Generator,
                hessian: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw x_k ~ N(x_{k+1} − h(b − ε s)(t_{k+1}, x_{k+1}), 2εh I); returns ``(x_k, log M_k)``."""
        mean, var = self._reverse_mean(k, x_next, score_next), 2.0 * self.epsilon * self._step(k)
        x = _gaussian_draw(mean, var, self.space, generator)
        return x, gaussian_log_prob(x, mean, var, self.space)

    def reverse_log_prob(self, k: int, x: torch.Tensor, x_next: torch.Tensor, score_next: torch.Tensor,
                         hessian: torch.Tensor | None = None) -> torch.Tensor:
        """log M_k(x | x_next), ``(B,)`` float64."""
        var = 2.0 * self.epsilon * self._step(k)
        return gaussian_log_prob(x, self._reverse_mean(k, x_next, score_next), var, self.space)


class IdentityKernels:
    """M_k = L_k = the identity (log-densities 0): annealing between levels without transport."""

    needs_hessian = False

    def reverse(self, k: int, x_next: torch.Tensor, score_next: torch.Tensor, generator: torch.Generator,
                hessian: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_next, 0)``: the sample stays put."""
        return x_next, torch.zeros(x_next.shape[0], dtype=torch.float64, device=x_next.device)

    def forward_log_prob(self, k: int, x: torch.Tensor, x_next: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """0 (the identity's log-density at the point it stays at)."""
        return torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)


IDENTITY = IdentityKernels()
