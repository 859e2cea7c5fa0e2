"""Exponential moving average of a model's parameters, with a constant or a power-function decay."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Shadow copy θ̄ ← d θ̄ + (1 − d) θ after every step (buffers are copied).

    Parameters
    ----------
    model
        The trained module; the shadow starts as a copy of it.
    decay
        d in [0, 1): the constant decay, and the cap of the power-function one.
    power
        γ ≥ 0 of the power-function EMA of Karras et al. 2024 ("Analyzing and improving the training
        dynamics of diffusion models", §3.1): at the n-th update d_n = min(decay, (1 − 1/n)^(γ+1)), so
        the average spans about the last n/(γ + 1) updates and the shadow forgets its starting weights
        at once (d_1 = 0) — a warm start's weights do not linger in it. 0 keeps d constant.
    """

    def __init__(self, model: nn.Module, decay: float, power: float = 0.0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if power < 0:
            raise ValueError(f"EMA power must be >= 0, got {power}")
        self.decay = decay
        self.power = power
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    def decay_at(self, n: int) -> float:
        """The decay of the n-th update (n ≥ 1)."""
        if self.power == 0:
            return self.decay
        return min(self.decay, (1.0 - 1.0 / n) ** (self.power + 1.0))

    @torch.no_grad()
    def update(self, model: nn.Module, n: int) -> None:
        """Blend the current parameters into the shadow copy at the n-th update (n ≥ 1) of this run."""
        weight = 1.0 - self.decay_at(n)
        for avg, cur in zip(self.shadow.parameters(), model.parameters()):
            avg.lerp_(cur, weight)
        for avg, cur in zip(self.shadow.buffers(), model.buffers()):
            avg.copy_(cur)
