"""Metrics of a learned energy against a Gaussian-mixture target whose marginals are exact (METHOD.md §5.1).

All metrics use exact samples of the true marginals p_t on a subset of the model's grid levels:

* ``clf_loss`` / ``clf_loss_exact``: multi-level classification cross-entropy over the evaluation
  levels, samples drawn along one sequential noising trajectory per x0 (independent draws for
  interpolants). The exact reference uses log p_{t_i}(x). The model uses log p̃_θ(t_i, x) − f̂_i with
  f̂ *fitted post hoc* (:func:`fit_free_energies`) on a second, independent set of trajectories: the
  maximum-likelihood f of the same classifier with the network fixed (a convex problem; it is
  Geyer's reverse logistic regression, i.e. the MBAR estimate of the model's level normalisers). So
  ``clf_loss`` measures the shapes and mode masses of the learned levels, not whether f was trained
  (a method that never trains f, like DSM, would otherwise be dominated by missing constants).
  ``clf_loss_raw`` is the same loss with the model's own learned f; ``free_energies_fitted`` (with
  ``free_energies_fitted_se``, asymptotic standard errors) and ``free_energies_model`` are f̂ and f
  at the evaluation levels (gauge: 0 at the last level).
* ``fisher``: E_{p_t}‖∇log p̃_θ − ∇log p_t‖²/d per level.
* ``ess``: Kish ESS/N of log w = log p̃_θ − log p_t with x ~ p_t (true marginal proposes, model is
  the target), per level; insensitive to f, very sensitive to misallocated mode mass.
* ``r2``: squared Pearson correlation of log p̃_θ and log p_t per level.
* Models are evaluated in their own floating dtype (that of their parameters; float64 for a
  parameter-free analytic model); everything is reported from float64.
* ``mode_weights``: the mass the model gives each mixture component at the first level (see
  :func:`mode_masses`); ``mode_weight_error`` is the total-variation distance ½Σ_k |m_k − w_k| to the
  true weights (for two modes: the error of the heavy mode's weight).
"""
from __future__ import annotations

import math

import torch

from boltzclf.estimators.importance import effective_sample_size
from boltzclf.targets.gmm import GaussianMixture, interpolant_marginal


def evaluation_levels(n_levels: int, n_eval: int) -> torch.Tensor:
    """``n_eval`` grid indices evenly spaced over ``[0, n_levels − 1]`` (both ends included)."""
    return torch.unique(torch.linspace(0, n_levels - 1, min(n_eval, n_levels)).round().long())


def exact_marginal(model, start: GaussianMixture, end: GaussianMixture | None, level: int) -> GaussianMixture:
    """The true p_t at grid level ``level`` (float64)."""
    t = float(model.levels[level])
    if model.process.kind == "interpolant":
        return interpolant_marginal(start, end, model.process, t)
    return start.noised(model.process, t)


@torch.no_grad()
def evaluate(model, start: GaussianMixture, end: GaussianMixture | None, n_samples: int, n_eval_levels: int,
             seed: int) -> dict:
    """All metrics of ``model`` against the mixture target; returns plain floats and lists."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    levels = evaluation_levels(model.n_levels, n_eval_levels)
    marginals = [exact_marginal(model, start, end, int(i)) for i in levels]
    per_level = {"fisher": [], "ess": [], "r2": []}
    for level, marginal in zip(levels, marginals):
        x = marginal.sample(n_samples, generator)
        true_logp, true_score = marginal.log_prob(x), marginal.score(x)
        model_logp, model_score = _model_log_prob_and_score(model, int(level), x)
        per_level["fisher"].append(float(((model_score - true_score) ** 2).sum(1).mean() / model.dim))
        per_level["ess"].append(float(effective_sample_size(model_logp - true_logp)))
        per_level["r2"].append(float(torch.corrcoef(torch.stack([model_logp, true_logp]))[0, 1] ** 2))
    trajectory = _level_samples(model, start, end, levels, marginals, n_samples, generator)
    # for interpolants p_t's components are pairs (a, b), index a·K_end + b: sum over the end's b
    masses = mode_masses(model, int(levels[0]), marginals[0], n_samples, generator)
    masses = masses.reshape(start.n_components, -1).sum(1)
    truth = start.weights
    # f̂ is fitted on trajectories independent of those it is scored on
    fit_samples = _level_samples(model, start, end, levels, marginals, n_samples, generator)
    fit_log_probs = level_log_probs(_model_unnormalised_fn(model, levels), fit_samples)
    fitted = fit_free_energies(fit_log_probs)
    model_f = model.free_energies.detach().to(torch.float64).cpu()[levels]
    model_f = model_f - model_f[-1]
    unnormalised = level_log_probs(_model_unnormalised_fn(model, levels), trajectory)
    return {
        "levels": [float(model.levels[i]) for i in levels],
        "clf_loss": classification_cross_entropy(unnormalised - fitted[None, :, None]),
        "clf_loss_raw": classification_cross_entropy(unnormalised - model_f[None, :, None]),
        "clf_loss_exact": classification_cross_entropy(level_log_probs(_exact_logit_fn(marginals), trajectory)),
        "free_energies_fitted": fitted.tolist(),
        "free_energies_fitted_se": free_energy_standard_errors(fit_log_probs, fitted).tolist(),
        "free_energies_model": model_f.tolist(),
        **per_level,
        "fisher_mean": sum(per_level["fisher"]) / len(levels),
        "ess_mean": sum(per_level["ess"]) / len(levels),
        "r2_mean": sum(per_level["r2"]) / len(levels),
        "mode_weights": masses.tolist(),
        "mode_weights_true": truth.tolist(),
        "mode_weight_error": float(0.5 * (masses - truth).abs().sum()),
    }


def model_dtype(model) -> torch.dtype:
    """The floating dtype the model computes in: its parameters' (float64 if it has none)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float64


def level_log_probs(log_prob_fn, samples: torch.Tensor) -> torch.Tensor:
    """``(L, L, N)`` float64 matrix ``out[j, i, n] = log_prob_fn(i, samples[j, n])`` for samples
    ``(L, N, D)`` (sample set j drawn from level j) and ``log_prob_fn(i, x) -> (N,)``."""
    n_levels = samples.shape[0]
    return torch.stack([torch.stack([log_prob_fn(i, samples[j]).to(torch.float64) for i in range(n_levels)])
                        for j in range(n_levels)])


def classification_cross_entropy(logits: torch.Tensor) -> float:
    """Mean cross-entropy of classifying sample n of set j as level j, from logits ``(L, L, N)``
    ``[sample level j, model level i, sample n]`` (see :func:`level_log_probs`), in nats."""
    n_levels = logits.shape[0]
    own = logits[torch.arange(n_levels), torch.arange(n_levels)]  # (L, N)
    return float((torch.logsumexp(logits, 1) - own).mean())


def fit_free_energies(log_probs: torch.Tensor, max_iter: int = 100, tol: float = 1e-10) -> torch.Tensor:
    """The f minimising the classification cross-entropy of ``log_probs − f`` (gauge f[−1] = 0).

    Parameters
    ----------
    log_probs
        ``(L, L, N)`` unnormalised log-densities ``[sample level j, model level i, sample n]``, with N
        samples from each level (see :func:`level_log_probs`).

    Returns
    -------
    ``(L,)`` float64 free energies (log-normalisers) in nats, last entry 0.

    Notes
    -----
    CE(f) = mean over samples of logsumexp_i(ℓ_i − f_i) − (ℓ_j − f_j) is convex in f; its stationarity
    condition, mean over all samples of softmax_i(ℓ − f) = 1/L, is the MBAR self-consistency equation,
    so f̂ is the MBAR (reverse logistic regression) estimate of log Z_i − log Z_{L−1} for the model's
    unnormalised levels. Solved by Newton's method with backtracking on the L − 1 free coordinates.
    """
    n_levels = log_probs.shape[0]
    flat = log_probs.to(torch.float64).permute(0, 2, 1).reshape(-1, n_levels)  # (L·N, L) rows by sample
    labels_share = 1.0 / n_levels  # equal sample counts per level

    def objective(f: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(flat - f, 1).mean() + f.sum() * labels_share  # CE up to an f-free constant

    # start from the per-level sample means of ℓ_i on its own samples (a level's typical height)
    own = log_probs[torch.arange(n_levels), torch.arange(n_levels)].to(torch.float64).mean(1)
    f = own - own[-1]
    value = objective(f)
    for _ in range(max_iter):
        p = torch.softmax(flat - f, 1)
        grad = (labels_share - p.mean(0))[:-1]
        hess = (torch.diag(p.mean(0)) - p.T @ p / p.shape[0])[:-1, :-1]
        if float(grad.abs().max()) < tol:
            break
        step = torch.linalg.solve(hess + 1e-12 * torch.eye(n_levels - 1, dtype=hess.dtype), -grad)
        if float(step @ grad) >= 0:  # not a descent direction (numerically singular Hessian)
            step = -grad
        shrink = 1.0
        while shrink > 1e-10:
            trial = f.clone()
            trial[:-1] += shrink * step
            trial_value = objective(trial)
            if trial_value <= value + 1e-4 * shrink * float(step @ grad):
                break
            shrink *= 0.5
        else:
            break
        f, value = trial, trial_value
    return f


def free_energy_standard_errors(log_probs: torch.Tensor, free_energies: torch.Tensor) -> torch.Tensor:
    """Asymptotic standard errors ``(L,)`` of :func:`fit_free_energies` (0 for the gauge level).

    The sandwich H⁻¹ J H⁻¹ of the M-estimator, with H the Hessian of the mean cross-entropy and J the
    covariance of per-sample gradients summed over the levels of sample index n: the n-th samples of
    the L sets may be one noising trajectory, so they are treated as one correlated cluster.
    """
    n_levels, _, n = log_probs.shape
    p = torch.softmax(log_probs.to(torch.float64) - free_energies[None, :, None], 1)  # (L_j, L_i, N)
    own = torch.eye(n_levels, dtype=torch.float64)[:, :, None]
    cluster = (p - own).sum(0)[:-1]  # (L − 1, N): per-trajectory gradient sums, free coordinates
    mean_p = p.mean((0, 2))
    flat = p.permute(0, 2, 1).reshape(-1, n_levels)
    hess = (torch.diag(mean_p) - flat.T @ flat / flat.shape[0])[:-1, :-1]
    centred = cluster - cluster.mean(1, keepdim=True)
    j = centred @ centred.T / n / n_levels**2  # covariance of the per-trajectory mean gradient, × N
    h_inv = torch.linalg.inv(hess)
    cov = h_inv @ j @ h_inv / n
    return torch.cat([cov.diagonal().clamp_min(0).sqrt(), torch.zeros(1, dtype=torch.float64)])


def mode_masses(model, level: int, marginal: GaussianMixture, n_samples: int,
                generator: torch.Generator) -> torch.Tensor:
    """Mass the model gives each mixture component at grid ``level``, ``(K,)`` float64.

    The mass of component k is M_k = ∫ q(x) r_k(x) dx with r_k = w_k p_k/p the true responsibility,
    estimated by stratified importance sampling: M_k ∝ w_k E_{p_k}[q̃/p] with ``n_samples`` draws
    from each component p_k of the true marginal. It is exactly w_k when q = p.
    """
    log_masses = []
    for k in range(marginal.n_components):
        component = GaussianMixture(torch.ones(1, dtype=marginal.weights.dtype), marginal.means[k:k + 1],
                                    marginal.variances[k:k + 1])
        x = component.sample(n_samples, generator)
        model_logp, _ = _model_log_prob_and_score(model, level, x)
        log_w = model_logp - marginal.log_prob(x)
        log_masses.append(torch.log(marginal.weights[k]) + torch.logsumexp(log_w, 0) - math.log(n_samples))
    return torch.softmax(torch.stack(log_masses), 0)


def _level_samples(model, start, end, levels, marginals, n, generator) -> torch.Tensor:
    """``(L, N, D)`` samples: one noising trajectory per x0 (diffusions) or independent draws."""
    if model.process.kind == "interpolant":
        return torch.stack([m.sample(n, generator) for m in marginals])
    process = model.process
    times = model.levels.to(torch.float64)[levels]
    x = start.noised(process, float(times[0])).sample(n, generator)
    out = [x]
    for s, t in zip(times[:-1], times[1:]):
        a, g = process.transition(s, t)
        x = a * x + g * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        out.append(x)
    return torch.stack(out)


def _model_unnormalised_fn(model, levels):
    """``(i, x) -> log p̃_θ(t_{levels[i]}, x)`` in the model's dtype and device, returned float64 on CPU."""
    device, dtype = model.levels.device, model_dtype(model)

    def log_prob(i: int, x: torch.Tensor) -> torch.Tensor:
        times = torch.full((x.shape[0],), float(model.levels[int(levels[i])]), dtype=dtype, device=device)
        return model.log_prob_unnormalised(times, x.to(device, dtype)).to(torch.float64).cpu()

    return log_prob


def _exact_logit_fn(marginals):
    return lambda i, x: marginals[i].log_prob(x)


def _model_log_prob_and_score(model, level: int, x: torch.Tensor):
    """Unnormalised log p̃_θ and score at grid ``level`` for float64 CPU points, both float64 on CPU."""
    device, dtype = model.levels.device, model_dtype(model)
    times = torch.full((x.shape[0],), float(model.levels[level]), dtype=dtype, device=device)
    logp, score = model.log_prob_and_score(times, x.to(device, dtype))
    return logp.detach().to(torch.float64).cpu(), score.detach().to(torch.float64).cpu()
