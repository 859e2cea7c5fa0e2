"""Metrics of weighted (or resampled) samples against a Gaussian-mixture target with known weights."""
from __future__ import annotations

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
    distance ½Σ|m_k − w_k| to the true weights) and ``mmd``.
    """
    samples = samples.detach().cpu().to(torch.float64)
    log_weights = log_weights.detach().cpu().to(torch.float64)
    labels = mixture.responsibilities(samples).argmax(1)
    masses = weighted_fractions(labels, mixture.n_components, log_weights, ancestors.detach().cpu())
    generator = torch.Generator().manual_seed(seed)
    picks = torch.multinomial(torch.softmax(log_weights, 0), n_mmd, replacement=True, generator=generator)
    return {
        "mode_weights": masses.value.tolist(), "mode_weights_se": masses.se.tolist(),
        "mode_weight_error": float(0.5 * (masses.value - mixture.weights).abs().sum()),
        "mmd": mmd(samples[picks], mixture.sample(n_mmd, generator)),
    }
