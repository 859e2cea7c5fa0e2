"""A rotation- and translation-invariant potential for one molecule: an MLP on internal-coordinate features.

For a molecule with a fixed atom order (one system, as in a Boltzmann generator), a potential that is a
function of SO(3)-invariant features is exactly invariant to rotations and translations, with no
equivariant message passing. The features of a (noised, scaled) configuration x̃ ``(n, 3)`` are

* every pair distance d̃_ij, raw and standardised with the training data's per-pair mean and spread
  (z = (d̃ − μ_ij)/s_ij, softly bounded as z/√(1 + (z/8)²)): a bond's 0.003 nm vibration and a
  1 nm contact are both O(1) inputs at low noise, where the energy is stiffest;
* for every proper dihedral a–b–c–d of the bond graph, the normalised triple product
  τ = (b − a)·[(c − b) × (d − c)] / (|b − a| |c − b| |d − c|), which is odd under reflection.
  Distances alone are reflection-invariant, so a model of distances alone gives a molecule and its
  mirror image (L- and D-alanine; for the 5-bead ALDP backbone, (φ, ψ) and (−φ, −ψ)) the same energy;
  τ tells them apart, so the learned density follows the data's chirality.

A residual time-conditioned MLP maps the features to the scalar Φ_θ(c, x̃), plus a quadratic term
Σ_ij κ_ij(c) z_ij² with per-pair stiffnesses κ(c) from the time embedding alone: bond stretches and
angle bends are close to harmonic in these z, so this term carries most of the stiff energy exactly
and leaves the MLP the anharmonic rest (both are zero at initialisation, so the energy model starts as
its Gaussian base). Cost is linear in the number of pairs; the network
is not permutation-equivariant (see :mod:`boltzclf.models.egnn` for a graph network that is).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from boltzclf.models.networks import SinusoidalEmbedding, TimeConditionedMLP

#: Soft bound of the standardised distances: z/√(1 + (z/Z_SCALE)²) → ±Z_SCALE.
Z_SCALE = 8.0


def proper_dihedrals(n_atoms: int, bonds: Sequence[tuple[int, int]]) -> np.ndarray:
    """All proper dihedrals a–b–c–d of a bond graph (each central bond, each pair of outer neighbours).

    Returns ``(Q, 4)`` int64 (empty ``(0, 4)`` for graphs with fewer than 3 bonds in a row).
    """
    neighbours: list[set[int]] = [set() for _ in range(n_atoms)]
    for i, j in bonds:
        neighbours[i].add(j)
        neighbours[j].add(i)
    quads = [(a, b, c, d) for b, c in bonds for a in sorted(neighbours[b] - {c})
             for d in sorted(neighbours[c] - {b, a})]
    return np.array(quads, dtype=np.int64).reshape(-1, 4)


def pair_indices(n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(P,)`` of all pairs i < j, P = n(n − 1)/2."""
    return np.triu_indices(n_atoms, k=1)


def pair_statistics(frames: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and spread ``(P,)`` of every pair distance of ``frames`` ``(F, n, 3)`` [nm], in units of σ_d."""
    i, j = pair_indices(frames.shape[1])
    d = (frames[:, i] - frames[:, j]).norm(dim=-1).to(torch.float64) / sigma_data
    return d.mean(0), d.std(0).clamp_min(1e-3)


class PairGeometry(nn.Module):
    """The invariant features of one molecule's configurations x̃ ``(B, n, 3)``: pair distances, their
    softly bounded standard scores and the dihedral triple products (see the module docstring).

    Parameters
    ----------
    n_atoms, bonds
        The molecule (bonds for the chirality features; may be empty).
    pair_mean, pair_std
        ``(P,)`` per-pair distance statistics of the training data in units of σ_d (from
        :func:`pair_statistics`); stored as buffers, so a checkpoint restores them.
    """

    def __init__(self, n_atoms: int, bonds: Sequence[tuple[int, int]], pair_mean: torch.Tensor | None = None,
                 pair_std: torch.Tensor | None = None):
        super().__init__()
        i, j = pair_indices(n_atoms)
        n_pairs = len(i)
        self.register_buffer("pair_i", torch.as_tensor(i, dtype=torch.long))
        self.register_buffer("pair_j", torch.as_tensor(j, dtype=torch.long))
        self.register_buffer("quads", torch.as_tensor(proper_dihedrals(n_atoms, bonds)))
        self.register_buffer("pair_mean", torch.zeros(n_pairs) if pair_mean is None else pair_mean.float().clone())
        self.register_buffer("pair_std", torch.ones(n_pairs) if pair_std is None else pair_std.float().clone())

    @property
    def n_pairs(self) -> int:
        return self.pair_i.shape[0]

    @property
    def n_features(self) -> int:
        return 2 * self.n_pairs + self.quads.shape[0]

    def standardised_distances(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair distances ``(B, P)`` of ``x`` ``(B, n, 3)`` and their softly bounded standard scores z."""
        d = (x[:, self.pair_i] - x[:, self.pair_j]).norm(dim=-1)
        z = (d - self.pair_mean.to(x.dtype)) / self.pair_std.to(x.dtype)
        return d, z / torch.sqrt(1.0 + (z / Z_SCALE) ** 2)

    def features(self, x: torch.Tensor, d: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``(B, n_features)``: the distances ``d``, their scores ``z`` and the chirality of ``x``."""
        return torch.cat([d, z, _chirality(x, self.quads)], dim=1)


class PairwisePotential(PairGeometry):
    """Φ_θ(c, x̃) from pair distances and dihedral triple products; ``outputs_potential``.

    Parameters
    ----------
    n_atoms, bonds, pair_mean, pair_std
        The molecule and its pair statistics (:class:`PairGeometry`).
    hidden, n_layers, time_dim, embedding
        The residual MLP (see :class:`~boltzclf.models.networks.TimeConditionedMLP`).
    """

    outputs_potential = True

    def __init__(self, n_atoms: int, bonds: Sequence[tuple[int, int]], pair_mean: torch.Tensor | None = None,
                 pair_std: torch.Tensor | None = None, hidden: int = 256, n_layers: int = 3, time_dim: int = 64,
                 embedding: str = "positional"):
        super().__init__(n_atoms, bonds, pair_mean, pair_std)
        self.mlp = TimeConditionedMLP(self.n_features, hidden, n_layers, time_dim, embedding, out_dim=1)
        self.stiffness = nn.Sequential(SinusoidalEmbedding(time_dim), nn.Linear(time_dim, hidden), nn.GELU(),
                                       nn.Linear(hidden, self.n_pairs))
        nn.init.zeros_(self.stiffness[-1].weight)
        nn.init.zeros_(self.stiffness[-1].bias)

    def forward(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``c`` ``(B,)``, ``x`` ``(B, n, 3)`` → Φ ``(B, 1)``."""
        d, z = self.standardised_distances(x)
        harmonic = (self.stiffness(c) * z.pow(2)).sum(dim=1, keepdim=True)
        return self.mlp(c, self.features(x, d, z)) + harmonic


def _chirality(x: torch.Tensor, quads: torch.Tensor) -> torch.Tensor:
    """Normalised triple products ``(B, Q)`` of the bond vectors of each dihedral (reflection-odd)."""
    if quads.shape[0] == 0:
        return x.new_zeros(x.shape[0], 0)
    a, b, c, d = (x[:, quads[:, k]] for k in range(4))
    u, v, w = b - a, c - b, d - c
    volume = (u * torch.linalg.cross(v, w)).sum(-1)
    return volume / (u.norm(dim=-1) * v.norm(dim=-1) * w.norm(dim=-1) + 1e-6)
