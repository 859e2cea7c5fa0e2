"""Importance-sampling diagnostics on log-weights (self-normalised)."""
from __future__ import annotations

import torch


def effective_sample_size(log_weights: torch.Tensor) -> torch.Tensor:
    """Kish effective sample size divided by N: exp(2 LSE(log w) − LSE(2 log w)) / N, in [1/N, 1].

    ``log_weights`` is ``(..., N)``; returns ``(...)``. Invariant to adding a constant to log w.
    """
    n = log_weights.shape[-1]
    lw = log_weights.to(torch.float64)
    return torch.exp(2.0 * torch.logsumexp(lw, -1) - torch.logsumexp(2.0 * lw, -1)) / n

