"""Composition of two energy paths as SMC targets: products and mixtures (METHOD.md §6.2, §8.3).

Both classes combine two paths (:class:`~boltzclf.sampling.paths.LearnedPath`, or models, which are
wrapped in one) level by level and satisfy the same path protocol, so :func:`~boltzclf.sampling.smc.smc`
and the kernels of :mod:`boltzclf.sampling.kernels` run them unchanged. Build the kernels on
``path.times`` with ``path.space`` (the first model) and the models' common ``process``.

* :class:`ProductPath` (product of experts): log π̃_k = log π̃ᵃ_k + log π̃ᵇ_k, score = the summed
  scores, so the reverse kernels' drift comes from sᵃ + sᵇ. Per-level normalisers only shift log π̃_k
  by a constant and cancel in the self-normalised weights, so f is *not* needed. Level 0 is whatever
  the two paths put there (each model at t_0, or each path's ``final_target`` — e.g. two true
  densities, whose product is then the exact target), unless ``final_target`` replaces the product
  as a whole. The final weighted particles target π̃ᵃ_0 π̃ᵇ_0 / Z_ab and ``log_z`` estimates
  log Z_ab = log ∫ π̃ᵃ_0 π̃ᵇ_0 dx (log ∫ p_a p_b dx for normalised ends).
* :class:`MixturePath`: log π̃_k = logsumexp(log w_a + log π̃ᵃ_k − fᵃ_k, log w_b + log π̃ᵇ_k − fᵇ_k),
  score = the responsibility-weighted sum of scores. A sum of densities needs each term *normalised*,
  hence the learned free energies f of each model at each level: what DiffCLF learns and denoising
  score matching does not (a DSM-trained f stays ≈ 0 while the true log-normalisers drift along the
  path, so the mixture weights come out wrong). ``log_z`` estimates log(w_a + w_b) = 0 when every
  term is normalised.

Start distribution (level K−1, where each model is its normalised Gaussian prior N(0, v I)): the
product uses the normalised N(0, v_a v_b/(v_a + v_b) I) ∝ N(0, v_a)·N(0, v_b), the mixture
w_a N(0, v_a) + w_b N(0, v_b), so the start weights are nearly flat.

Evaluation counters ``n_model_evals`` / ``n_target_evals`` count samples evaluated by each model /
true target during this path's own calls (a product or mixture evaluates two per sample), including
the evaluations a mixture's Hessian needs for its responsibilities.
"""
from __future__ import annotations

import math

import torch

from boltzclf.sampling.paths import LearnedPath, draw_start, hessian_of, target_log_prob_and_score
from boltzclf.sampling.priors import GaussianPrior

__all__ = ["MixturePath", "ProductPath"]


def _as_path(obj, times: torch.Tensor | None, chunk_size: int | None):
    """A path as given, or a LearnedPath of a model (on ``times``, default the model's own grid)."""
    if hasattr(obj, "log_density"):
        if times is not None:
            raise ValueError("times= applies to models only; build the LearnedPath with times=... instead")
        return obj
    if hasattr(obj, "log_prob_unnormalised"):
        return LearnedPath(obj, chunk_size=chunk_size, times=times)
    raise TypeError("expected a path (log_density) or an energy model (log_prob_unnormalised), "
                    f"got {type(obj).__name__}")


class _PriorMixture:
    """Σ_m w_m N(0, v_m I): a normalised mixture of Gaussian priors on one space."""

    def __init__(self, weights: tuple[float, ...], priors: tuple[GaussianPrior, ...]):
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.priors = priors

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        terms = [math.log(float(w)) + prior.log_prob(x) for w, prior in zip(self.weights, self.priors)]
        return torch.logsumexp(torch.stack(terms, 0), 0)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        draws = torch.stack([prior.sample(n, generator) for prior in self.priors])  # (M, n, *event)
        return draws[component, torch.arange(n)]


class _Composition:
    """Shared machinery: two paths on one grid, the first one's space, delta-counted evaluations."""

    def __init__(self, path_a, path_b, times, chunk_size):
        self.path_a = _as_path(path_a, times, chunk_size)
        self.path_b = _as_path(path_b, times, chunk_size)
        a, b = self.path_a, self.path_b
        if a.times.shape != b.times.shape or not torch.allclose(a.times, b.times, rtol=1e-6, atol=0.0):
            raise ValueError(f"the two paths walk different level times ({len(a.times)} vs {len(b.times)} levels); "
                             "build both on the same grid (times=...)")
        self.times = a.times
        self.space = a.space
        for attr in ("event_shape", "dim", "particles"):
            va, vb = getattr(a.space, attr, None), getattr(b.space, attr, None)
            if va != vb:
                raise ValueError(f"the two models live on different spaces: {attr} {va!r} vs {vb!r}")
        pa, pb = getattr(a.space, "process", None), getattr(b.space, "process", None)
        if pa is not None and pb is not None and repr(pa) != repr(pb):
            raise ValueError(f"the two models use different noising processes ({pa!r} vs {pb!r}); "
                             "one set of kernels cannot serve both")
        self.process = pa
        self.chunk_size = chunk_size
        self.n_model_evals = 0
        self.n_target_evals = 0

    @property
    def n_levels(self) -> int:
        return len(self.times)

    def _gaussian_start_variances(self) -> tuple[float, float]:
        starts = (getattr(self.path_a, "start", None), getattr(self.path_b, "start", None))
        if not all(isinstance(s, GaussianPrior) for s in starts):
            raise ValueError("composing the start distributions needs Gaussian-prior starts (diffusion paths); "
                             "pass start=... (an object with sample(n, generator) and log_prob(x))")
        return starts[0].variance, starts[1].variance

    def initial(self, n: int, generator: torch.Generator, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` start samples at level K−1 and their (normalised) log-density, float64 ``(n,)``."""
        return draw_start(self.start, n, generator, dtype, device)

    def _evaluate(self, path, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``path.log_density(k, x)``, adding the evaluations it made to this path's counters."""
        model, target = path.n_model_evals, path.n_target_evals
        out = path.log_density(k, x)
        self.n_model_evals += path.n_model_evals - model
        self.n_target_evals += path.n_target_evals - target
        return out


class ProductPath(_Composition):
    """Product of two paths: log π̃_k(x) = log π̃ᵃ_k(x) + log π̃ᵇ_k(x) (product of experts).

    The final weighted particles of :func:`~boltzclf.sampling.smc.smc` target π̃ᵃ_0 π̃ᵇ_0 / Z_ab and its
    ``log_z`` estimates log Z_ab = log ∫ π̃ᵃ_0 π̃ᵇ_0 dx. No free energies are needed (per-level constants
    cancel in the weights).

    Choosing the grid: at high noise p_a(t)p_b(t) is narrower than any diffused density (≈ N(0, v/2)
    where each model is N(0, v)), so the summed Hessian makes the DDPM kernel's posterior variance
    negative (the kernel clips it) and the reverse kernels keep contracting the particles; the weights
    correct this but become heavy-tailed, and the error bars shrink slowly with more particles. The
    estimates stay consistent; for efficiency, start the walk at moderate noise (for VP with σ_d = 1,
    t_max ≈ 0.3, log-SNR ≈ 0.5, worked well in tests) and use a fine grid (≳ 64 levels).

    Parameters
    ----------
    path_a, path_b
        Paths on the same level times (e.g. :class:`~boltzclf.sampling.paths.LearnedPath`), or energy
        models (:class:`~boltzclf.models.energy.TimeDependentEnergy`), wrapped as ``LearnedPath(model,
        times=times)``. Level 0 is the product of the two paths' level 0: the models at t_0, or the true
        densities given to the paths as ``final_target`` (e.g. two GaussianMixtures: the product of
        their −energy, exactly p_a p_b).
    final_target
        EnergyTarget replacing level 0 of the product as a whole (its −energy is log π̃_0), or None.
    start
        Start distribution at level K−1 (``sample(n, generator)``, ``log_prob(x)``); default
        the normalised N(0, v_a v_b/(v_a + v_b) I) ∝ N(0, v_a I)·N(0, v_b I), the product of the models'
        priors (needs Gaussian-prior starts in both paths).
    times
        Ascending level times ``(K,)`` for models given directly (default: the first model's grid).
    chunk_size
        Evaluate at most this many samples at once (models given directly, and ``final_target``).

    Attributes
    ----------
    times ``(K,)`` float64, n_levels, space (the first path's model), process, score_only (both paths
    score-only: diffusion AIS on the product), n_model_evals, n_target_evals.
    """

    def __init__(self, path_a, path_b, final_target=None, start=None, times: torch.Tensor | None = None,
                 chunk_size: int | None = None):
        super().__init__(path_a, path_b, times, chunk_size)
        flags = (bool(getattr(self.path_a, "score_only", False)), bool(getattr(self.path_b, "score_only", False)))
        if flags[0] != flags[1]:
            raise ValueError("one path is score_only and the other is not; build both the same way")
        self.score_only = flags[0]
        self.final_target = final_target
        if start is None:
            va, vb = self._gaussian_start_variances()
            start = GaussianPrior.on_space(va * vb / (va + vb), self.space)
        self.start = start

    def log_density(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log π̃ᵃ_k + log π̃ᵇ_k (B,) float64, sᵃ + sᵇ like x)`` (or ``final_target``'s at level 0)."""
        if k == 0 and self.final_target is not None:
            self.n_target_evals += x.shape[0]
            return target_log_prob_and_score(self.final_target, x, self.chunk_size)
        logp_a, score_a = self._evaluate(self.path_a, k, x)
        logp_b, score_b = self._evaluate(self.path_b, k, x)
        return logp_a + logp_b, score_a + score_b

    def hessian(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """∇² log π̃_k(x) = Hᵃ + Hᵇ for flat ``x`` ``(B, D)``: ``(B, D, D)``."""
        if k == 0 and self.final_target is not None:
            return hessian_of(lambda y: -self.final_target.energy(y), x)
        return self.path_a.hessian(k, x) + self.path_b.hessian(k, x)


class MixturePath(_Composition):
    """Mixture of two paths: π̃_k = w_a π̃ᵃ_k e^{−fᵃ_k} + w_b π̃ᵇ_k e^{−fᵇ_k}.

    Each term is normalised by its model's learned free energy f_k (``model.free_energies[k]``, with
    log p(t_k, x) = log p̃(t_k, x) − f_k). **This needs correct free energies**: DiffCLF learns them;
    a model trained by denoising score matching alone has f ≈ 0 (untrained) while its true
    log-normalisers vary along the path, so its term is off by an unknown factor per level and the
    mixture weights come out wrong (only the scores are identified by DSM). Because f exists only on
    the model's training grid, each path must walk exactly its model's own levels (``LearnedPath(model)``
    without ``times=``); other times raise ``ValueError`` (no interpolation of f).

    At level 0 a path's ``final_target`` (if set) enters as a *normalised* density (−energy = log p,
    as for a GaussianMixture; a reduced OpenMM energy is not normalised and would bias the weights),
    without f. With true targets at level 0 the final weights are right whatever f is (a wrong f only
    degrades the intermediate targets, i.e. the ESS); without them the models at t_0 are the final
    target and f sets the mode weights.

    Parameters
    ----------
    path_a, path_b
        LearnedPaths on their models' own grids (``path.model`` with ``levels`` and ``free_energies``),
        or the models themselves.
    weights
        ``(w_a, w_b)``, positive; normalised to sum 1.
    start
        Start distribution at level K−1 (``sample(n, generator)``, ``log_prob(x)``); default
        w_a N(0, v_a I) + w_b N(0, v_b I), the mixture of the models' priors.
    chunk_size
        Evaluate at most this many samples at once (models given directly).

    Attributes
    ----------
    weights ``(w_a, w_b)`` normalised, times ``(K,)`` float64, n_levels, space, process, n_model_evals,
    n_target_evals.
    """

    def __init__(self, path_a, path_b, weights: tuple[float, float] = (0.5, 0.5), start=None,
                 chunk_size: int | None = None):
        super().__init__(path_a, path_b, None, chunk_size)
        weights = tuple(float(w) for w in weights)
        if len(weights) != 2 or not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"weights must be two positive finite numbers, got {weights}")
        total = sum(weights)
        self.weights = (weights[0] / total, weights[1] / total)
        self._log_weights = tuple(math.log(w) for w in self.weights)
        for name, path in (("path_a", self.path_a), ("path_b", self.path_b)):
            if getattr(path, "score_only", False):
                raise ValueError(f"{name} is score_only: a mixture needs the log-densities")
            model = getattr(path, "model", None)
            if model is None or not hasattr(model, "free_energies"):
                raise ValueError(f"{name} has no model with free energies f; a mixture needs them")
            levels = model.levels.detach().to(torch.float64).cpu()
            if levels.shape != path.times.shape or not torch.allclose(path.times, levels, rtol=1e-6, atol=0.0):
                raise ValueError(
                    f"{name} walks times that are not its model's grid ({len(path.times)} path levels vs "
                    f"{len(levels)} model levels): the learned free energies f exist only at model.levels; "
                    "build the path as LearnedPath(model) (no times=), or train the model on the grid you walk")
        if start is None:
            va, vb = self._gaussian_start_variances()
            start = (GaussianPrior.on_space(va, self.space) if math.isclose(va, vb, rel_tol=1e-12)
                     else _PriorMixture(self.weights, (GaussianPrior.on_space(va, self.space),
                                                       GaussianPrior.on_space(vb, self.space))))
        self.start = start

    def log_offset(self, which: int, k: int) -> float:
        """log w_m − f^m_k of term ``which`` (0: a, 1: b) at level k (no f where level 0 is a true target)."""
        path = (self.path_a, self.path_b)[which]
        true_end = k == 0 and getattr(path, "final_target", None) is not None
        f = 0.0 if true_end else float(path.model.free_energies[k])
        return self._log_weights[which] - f

    def _terms(self, k: int, x: torch.Tensor):
        logp_a, score_a = self._evaluate(self.path_a, k, x)
        logp_b, score_b = self._evaluate(self.path_b, k, x)
        terms = torch.stack([logp_a + self.log_offset(0, k), logp_b + self.log_offset(1, k)], 0)  # (2, B)
        logp = torch.logsumexp(terms, 0)
        resp = torch.exp(terms - logp)  # (2, B) responsibilities, float64
        return logp, resp, (score_a, score_b)

    def log_density(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log π̃_k (B,) float64, r_a sᵃ + r_b sᵇ like x)`` with responsibilities r_m (B,)."""
        logp, resp, (score_a, score_b) = self._terms(k, x)
        shape = (-1,) + (1,) * (x.dim() - 1)
        score = resp[0].to(x.dtype).reshape(shape) * score_a + resp[1].to(x.dtype).reshape(shape) * score_b
        return logp, score

    def responsibilities(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Posterior probability of each term at level k, ``(B, 2)`` float64 (e.g. to label samples)."""
        return self._terms(k, x)[1].T

    def hessian(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """∇² log π̃_k = Σ_m r_m (H_m + s_m s_mᵀ) − s sᵀ for flat ``x`` ``(B, D)``: ``(B, D, D)`` float64."""
        _, resp, scores = self._terms(k, x)
        hessians = (self.path_a.hessian(k, x), self.path_b.hessian(k, x))
        mean = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        out = torch.zeros(x.shape + x.shape[-1:], dtype=torch.float64, device=x.device)
        for r, s, h in zip(resp, scores, hessians):
            s = s.to(torch.float64)
            mean += r[:, None] * s
            out += r[:, None, None] * (h.to(torch.float64) + s[:, :, None] * s[:, None, :])
        return out - mean[:, :, None] * mean[:, None, :]
