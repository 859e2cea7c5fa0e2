"""Metrics of weighted (or resampled) samples against a Gaussian-mixture target with known weights."""
from __future__ import annotations

import math

import torch

from boltzclf.estimators.mmd import mmd
from boltzclf.estimators.weighted import weighted_fractions
from boltzclf.targets.gmm import GaussianMixture


def weighted_sample_metrics(samples: torch.Tensor, log_weights: torch.Tensor, ancestors: torch.Tensor,
                            mixture: GaussianMixture, seed: int, n_mmd: int = 2048) -> dict:
    """Mode masses with standard errors, their error against the mixture's weights, and an MMD².

    Parameters
    ----------
    samples
        ``(N, D)`` samples.
    log_weights
        ``(N,)`` log-weights (any normalisation); equal for unweighted samples.
    ancestors
        ``(N,)`` cluster ids: the start particle each sample descends from (resampled particles share
        it), so the mode masses' errors are right for weighted *and* resampled samples.
    mixture
        The target; a sample belongs to the component with the largest responsibility.
    seed, n_mmd
        MMD² between ``n_mmd`` multinomial draws from the weighted samples and ``n_mmd`` exact samples.

    Returns
    -------
    ``mode_weights`` and ``mode_weights_se`` (K floats each), ``mode_weight_error`` (total-variation
    distance ½Σ|m_k − w_k| to the true weights), ``mode_weight_error_noise`` (the distance expected
    from sampling noise alone, ½Σ_k √(2/π)·se_k: the mean of ½Σ|m_k − w_k| for unbiased, normally
    distributed m_k with these standard errors; with many modes it is not small, e.g. ≈ 0.08 for 40
    equal modes and ~1,000 effective samples), ``mode_weight_max_z`` (the largest |m_k − w_k|/se_k over
    the modes that hold samples), ``modes_empty`` (modes of positive true weight that no sample with
    positive weight reaches: a weighted sample cannot correct their mass) and ``mmd``.
    """
    samples = samples.detach().cpu().to(torch.float64)
    log_weights = log_weights.detach().cpu().to(torch.float64)
    labels = mixture.responsibilities(samples).argmax(1)
    masses = weighted_fractions(labels, mixture.n_components, log_weights, ancestors.detach().cpu())
    generator = torch.Generator().manual_seed(seed)
    picks = torch.multinomial(torch.softmax(log_weights, 0), n_mmd, replacement=True, generator=generator)
    occupied = torch.zeros(mixture.n_components, dtype=torch.bool)
    occupied[labels[log_weights > -math.inf]] = True
    z = (masses.value - mixture.weights)[occupied] / masses.se[occupied].clamp_min(1e-300)
    return {
        "mode_weights": masses.value.tolist(), "mode_weights_se": masses.se.tolist(),
        "mode_weight_error": float(0.5 * (masses.value - mixture.weights).abs().sum()),
        "mode_weight_error_noise": float(0.5 * math.sqrt(2 / math.pi) * masses.se.sum()),
        "mode_weight_max_z": float(z.abs().max()) if z.numel() else float("nan"),
        "modes_empty": int((~occupied & (mixture.weights > 0)).sum()),
        "mmd": mmd(samples[picks], mixture.sample(n_mmd, generator)),
    }
