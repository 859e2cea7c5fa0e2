"""Time-conditioned vector-field networks NN(c, x̃) → same shape as x̃.

Any module with ``forward(c, x)`` taking conditioning ``c`` ``(B,)`` and inputs ``x`` ``(B, *event)``
and returning ``(B, *event)`` can back an :class:`~boltzclf.models.energy.EnergyModel`; an
E(3)-equivariant network for molecules fits the same signature.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalEmbedding(nn.Module):
    """Positional (transformer-style) embedding of a scalar: [sin(c ω_j), cos(c ω_j)], ω_j geometric."""

    def __init__(self, dim: int, max_period: float = 1e4, scale: float = 100.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        freqs = scale * torch.exp(-math.log(max_period) * torch.arange(dim // 2) / (dim // 2))
        self.register_buffer("freqs", freqs)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """``c`` ``(B,)`` → ``(B, dim)``."""
        angles = c[:, None] * self.freqs.to(c.dtype)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of a scalar, [sin(2π c ω_j), cos(2π c ω_j)] with fixed ω_j ~ N(0, scale²)."""

    def __init__(self, dim: int, scale: float = 4.0, seed: int = 0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", scale * torch.randn(dim // 2, generator=generator))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """``c`` ``(B,)`` → ``(B, dim)``."""
        angles = 2.0 * math.pi * c[:, None] * self.freqs.to(c.dtype)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class _ResidualBlock(nn.Module):
    def __init__(self, hidden: int, time_dim: int):
        super().__init__()
        self.inner = nn.Linear(hidden, hidden)
        self.time = nn.Linear(time_dim, hidden)
        self.outer = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, temb: torch.Tensor, select: torch.Tensor | None) -> torch.Tensor:
        time = self.time(temb) if select is None else select @ self.time(temb)
        u = nn.functional.gelu(self.inner(nn.functional.gelu(h)) + time)
        return h + self.outer(u)


class TimeConditionedMLP(nn.Module):
    """Residual MLP R^D → R^D (or R^out_dim) with the time embedding re-injected in every block.

    The output layer is zero-initialised, so a freshly built network returns zeros and an energy
    model built on it is exactly its Gaussian base (see :class:`~boltzclf.models.energy.EnergyModel`).

    Parameters
    ----------
    dim
        Flattened event size D (``n_atoms * 3`` for molecules).
    hidden, n_layers
        Width and number of residual blocks.
    time_dim
        Size of the time embedding.
    embedding
        ``"positional"`` (sinusoidal) or ``"fourier"`` (random Fourier features).
    out_dim
        Output size; None returns the input's shape (a vector field), an integer ``(B, out_dim)``.
    """

    def __init__(self, dim: int, hidden: int = 128, n_layers: int = 4, time_dim: int = 64,
                 embedding: str = "positional", out_dim: int | None = None):
        super().__init__()
        if embedding == "positional":
            self.embed = SinusoidalEmbedding(time_dim)
        elif embedding == "fourier":
            self.embed = FourierEmbedding(time_dim)
        else:
            raise ValueError(f"unknown time embedding {embedding!r} (use positional or fourier)")
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))
        self.input = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden, time_dim) for _ in range(n_layers))
        self.out_dim = out_dim
        self.output = nn.Linear(hidden, dim if out_dim is None else out_dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``c`` ``(B,)``, ``x`` ``(B, *event)`` → ``(B, *event)`` (or ``(B, out_dim)``).

        Training batches hold few distinct times (grid levels), so the time path is computed once per
        distinct value and spread to the rows, unless ``c`` needs gradients (∂/∂t), which ``unique``
        cannot pass. The spreading is a product with the one-hot row-to-value matrix, not an indexed
        gather: the backward of a gather is an accumulating scatter (``index_put_`` with
        ``accumulate=True``), which on CPU adds in a thread-dependent order, so two runs with the same
        seed would drift apart in the last bits; a matrix product reduces in a fixed order. With many
        distinct times (more than one per 8 rows) the time path is simply computed for every row.
        """
        select = None
        if not c.requires_grad:
            values, rows = torch.unique(c, return_inverse=True)
            if 8 * values.shape[0] <= c.shape[0]:
                c, select = values, nn.functional.one_hot(rows, values.shape[0]).to(x.dtype)
        temb = self.time_mlp(self.embed(c))
        h = self.input(x.flatten(1))
        for block in self.blocks:
            h = block(h, temb, select)
        out = self.output(nn.functional.gelu(h))
        return out.reshape(x.shape) if self.out_dim is None else out
