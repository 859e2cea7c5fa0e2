"""Exponential moving average of a model's parameters."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Shadow copy θ̄ ← d θ̄ + (1 − d) θ after every step (buffers are copied)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current parameters into the shadow copy."""
        for avg, cur in zip(self.shadow.parameters(), model.parameters()):
            avg.lerp_(cur, 1.0 - self.decay)
        for avg, cur in zip(self.shadow.buffers(), model.buffers()):
            avg.copy_(cur)
