"""Resampling of weighted particle groups (independent SMC runs held in one tensor)."""
from __future__ import annotations

import torch

from boltzclf.estimators.importance import effective_sample_size


def systematic_indices(log_weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Systematic resampling indices per group.

    Parameters
    ----------
    log_weights
        ``(G, n)`` unnormalised log-weights, one row per independent group.
    generator
        Source of the one uniform offset per group.

    Returns
    -------
    ``(G, n)`` long tensor of within-group indices; index i is drawn n·W_i times up to rounding, so the
    resampled population is unbiased with lower variance than multinomial draws.
    """
    groups, n = log_weights.shape
    weights = torch.softmax(log_weights.to(torch.float64), dim=1)
    cumulative = torch.cumsum(weights, dim=1)
    cumulative[:, -1] = 1.0  # guard against round-off below 1
    offset = torch.rand((groups, 1), generator=generator, dtype=torch.float64, device=generator.device)
    positions = (offset.to(weights.device) + torch.arange(n, dtype=torch.float64, device=weights.device)) / n
    return torch.searchsorted(cumulative, positions).clamp_max(n - 1)


def resample_groups(log_weights: torch.Tensor, threshold: float, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decide per group whether to resample (ESS/n < ``threshold``) and draw systematic indices.

    Returns ``(indices (G, n), resampled (G,) bool)``; groups that keep their particles get the
    identity indices.
    """
    groups, n = log_weights.shape
    resampled = effective_sample_size(log_weights) < threshold
    identity = torch.arange(n, device=log_weights.device).expand(groups, n)
    indices = systematic_indices(log_weights, generator)
    return torch.where(resampled[:, None], indices, identity), resampled
