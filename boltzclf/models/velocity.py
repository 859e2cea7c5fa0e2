"""A learned velocity field of a stochastic interpolant between two ensembles of one molecule.

The interpolant x_t = (1 − t) x0 + t x1 + γ(t) z moves its samples with the drift
b(t, x) = E[x1 − x0 + γ̇(t) z | x_t = x] = v(t, x) − γ(t)γ̇(t) s(t, x), where s is the score of the
marginal p_t (which the energy model supplies) and

    v(t, x) = E[x1 − x0 | x_t = x]

is the velocity this module learns, by regression on (x_t, x1 − x0) pairs (the conditional mean
minimises the expected squared error; Albergo, Boffi & Vanden-Eijnden 2023). v transports samples
between the levels of the learned energy (:class:`~boltzclf.sampling.kernels.InterpolantKernels`).

The pairs are rotation-equivariant (x0 is Haar-rotated and x1 superposed on it), so v is: v(t, x Rᵀ)
= v(t, x) Rᵀ, and v does not depend on the molecule's position. :class:`PairwiseVelocity` builds it
from the invariant pair features of :class:`~boltzclf.models.pairwise.PairGeometry`,

    v_i = σ_d Σ_{j ≠ i} a_ij(c, x̃) (x̃_i − x̃_j),    a_ij = a_ji,

with one coefficient per pair from a time-conditioned MLP: every term is a difference of positions
times an invariant, so v is exactly equivariant, translation-invariant and, because a is symmetric,
free of centre-of-geometry motion. The sum over pairs is a product with a fixed ``(n, P)`` incidence
matrix (no scatter-add, so runs are bit-reproducible on CPU).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from boltzclf.models.networks import TimeConditionedMLP
from boltzclf.models.pairwise import PairGeometry


class PairwiseVelocity(PairGeometry):
    """The pair coefficients a_ij(c, x̃) of the module docstring and the equivariant field they give.

    Parameters
    ----------
    n_atoms, bonds, pair_mean, pair_std
        The molecule and its pair statistics (:class:`~boltzclf.models.pairwise.PairGeometry`).
    hidden, n_layers, time_dim
        The residual MLP (:class:`~boltzclf.models.networks.TimeConditionedMLP`), zero at initialisation.
    """

    def __init__(self, n_atoms: int, bonds: Sequence[tuple[int, int]], pair_mean: torch.Tensor | None = None,
                 pair_std: torch.Tensor | None = None, hidden: int = 256, n_layers: int = 3, time_dim: int = 64):
        super().__init__(n_atoms, bonds, pair_mean, pair_std)
        self.mlp = TimeConditionedMLP(self.n_features, hidden, n_layers, time_dim, out_dim=self.n_pairs)
        incidence = torch.zeros(n_atoms, self.n_pairs)
        pairs = torch.arange(self.n_pairs)
        incidence[self.pair_i, pairs] = 1.0
        incidence[self.pair_j, pairs] = -1.0
        self.register_buffer("incidence", incidence)

    def forward(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``c`` ``(B,)``, scaled positions ``x`` ``(B, n, 3)`` → Σ_j a_ij (x_i − x_j) ``(B, n, 3)``."""
        d, z = self.standardised_distances(x)
        coefficients = self.mlp(c, self.features(x, d, z))  # (B, P)
        differences = x[:, self.pair_i] - x[:, self.pair_j]  # (B, P, 3)
        return torch.einsum("np,bpk->bnk", self.incidence.to(x.dtype), coefficients[..., None] * differences)


class VelocityModel(nn.Module):
    """v_θ(t, x) ≈ E[x1 − x0 | x_t = x] [nm per unit t] of an interpolant, for positions ``x`` ``(B, n, 3)`` [nm].

    Inputs are centred and scaled to unit variance as in the energy model (x̃ = x_c / √Var x_t), the
    network's field is multiplied by σ_d (the scale of x1 − x0).

    Parameters
    ----------
    network
        :class:`PairwiseVelocity` (or any ``(c, x̃) -> like x̃`` equivariant field).
    process
        The :class:`~boltzclf.diffusion.StochasticInterpolant`.
    sigma_data
        Per-coordinate standard deviation of the centred data [nm].
    """

    def __init__(self, network: nn.Module, process, sigma_data: float):
        super().__init__()
        if process.kind != "interpolant":
            raise ValueError("a velocity model needs a stochastic interpolant")
        self.network = network
        self.process = process
        self.sigma_data = float(sigma_data)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``t`` ``(B,)`` in (0, 1), ``x`` ``(B, n, 3)`` → v ``(B, n, 3)``."""
        x = x - x.mean(dim=-2, keepdim=True)
        t = t.to(x.dtype)
        scale = self.process.input_variance(t, self.sigma_data).sqrt()[:, None, None]
        return self.sigma_data * self.network(t, x / scale)

    def gauge_fix_(self) -> None:
        """Nothing to fix (the trainer calls this after every step): a velocity has no free-energy gauge."""
