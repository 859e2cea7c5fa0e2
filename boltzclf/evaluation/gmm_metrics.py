"""Metrics of a learned energy against a Gaussian-mixture target whose marginals are exact (METHOD.md §5.1).

All metrics use exact samples of the true marginals p_t on a subset of the model's grid levels:

* ``clf_loss`` / ``clf_loss_exact``: multi-level classification cross-entropy over the evaluation
  levels, samples drawn along one sequential noising trajectory per x0 (independent draws for
  interpolants); the model uses logits log p̃_θ(t_i, x) − f_i, the exact reference log p_{t_i}(x).
* ``fisher``: E_{p_t}‖∇log p̃_θ − ∇log p_t‖²/d per level.
* ``ess``: Kish ESS/N of log w = log p̃_θ − log p_t with x ~ p_t (true marginal proposes, model is
  the target), per level; insensitive to f, very sensitive to misallocated mode mass.
* ``r2``: squared Pearson correlation of log p̃_θ and log p_t per level.
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
    device = model.levels.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    levels = evaluation_levels(model.n_levels, n_eval_levels)
    marginals = [exact_marginal(model, start, end, int(i)) for i in levels]
    per_level = {"fisher": [], "ess": [], "r2": []}
    for level, marginal in zip(levels, marginals):
        x = marginal.sample(n_samples, generator)
        true_logp, true_score = marginal.log_prob(x), marginal.score(x)
        model_logp, model_score = _model_log_prob_and_score(model, int(level), x.to(device))
        per_level["fisher"].append(float(((model_score - true_score) ** 2).sum(1).mean() / model.dim))
        per_level["ess"].append(float(effective_sample_size(model_logp - true_logp)))
        per_level["r2"].append(float(torch.corrcoef(torch.stack([model_logp, true_logp]))[0, 1] ** 2))
    trajectory = _level_samples(model, start, end, levels, marginals, n_samples, generator)
    masses = mode_masses(model, int(levels[0]), marginals[0], n_samples, generator)
    truth = start.weights
    return {
        "levels": [float(model.levels[i]) for i in levels],
        "clf_loss": classification_cross_entropy(_model_logit_fn(model, levels), trajectory),
        "clf_loss_exact": classification_cross_entropy(_exact_logit_fn(marginals), trajectory),
        **per_level,
        "fisher_mean": sum(per_level["fisher"]) / len(levels),
        "ess_mean": sum(per_level["ess"]) / len(levels),
        "r2_mean": sum(per_level["r2"]) / len(levels),
        "mode_weights": masses.tolist(),
        "mode_weights_true": truth.tolist(),
        "mode_weight_error": float(0.5 * (masses - truth).abs().sum()),
    }


def classification_cross_entropy(logit_fn, samples: torch.Tensor) -> float:
    """Mean CE of classifying ``samples`` ``(L, N, D)`` (sample j from level j) with logits
    ``logit_fn(i, x) -> (N,)`` for level i."""
    n_levels = samples.shape[0]
    total = 0.0
    for j in range(n_levels):
        logits = torch.stack([logit_fn(i, samples[j]) for i in range(n_levels)])  # (L, N)
        total += float((torch.logsumexp(logits, 0) - logits[j]).mean())
    return total / n_levels


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
        model_logp, _ = _model_log_prob_and_score(model, level, x.to(model.levels.device))
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


def _model_logit_fn(model, levels):
    device = model.levels.device

    def logits(i: int, x: torch.Tensor) -> torch.Tensor:
        level = torch.full((x.shape[0],), int(levels[i]), device=device)
        return model.log_prob(level, x.to(device, torch.float32)).to(torch.float64).cpu()

    return logits


def _exact_logit_fn(marginals):
    return lambda i, x: marginals[i].log_prob(x)


def _model_log_prob_and_score(model, level: int, x: torch.Tensor):
    times = torch.full((x.shape[0],), float(model.levels[level]), device=x.device)
    logp, score = model.log_prob_and_score(times, x.to(torch.float32))
    return logp.detach().to(torch.float64).cpu(), score.detach().to(torch.float64).cpu()
