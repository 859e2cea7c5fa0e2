"""All interatomic distances of a batch as a dense grid, with a closed-form backward pass.

The pair terms (Coulomb and Lennard-Jones, generalized Born) are evaluated on the dense ``(N, N, B)``
grid of distances (batch last): simple elementwise loops along the batch, without index gathers.
Differentiating ``r_ij = |x_i - x_j|`` through autograd would keep, and sweep several times, the
``(3, N, N, B)`` separation vectors; :func:`pair_distances` instead computes the gradient with
respect to the positions directly from the gradient ``g`` with respect to the distances,

    ∂L/∂x_i = Σ_j (g_ij + g_ji) (x_i - x_j) / r_ij,

one reduction along the grid per Cartesian component, and a backward pass shared by every pair term.
Under ``torch.compile`` (float32, 2 CPU threads, 1024 alanine-dipeptide samples, energy and forces)
the nonbonded and GB terms together took 4.2 ms this way, against 8.0 ms with autograd through the
separations and a pair list for the nonbonded term, and 15.7 ms with autograd through the separations
of both grids (inductor then materialised the ``(3, N, N, B)`` separations). The backward is written
in differentiable torch operations, so second derivatives are exact too.
"""
from __future__ import annotations

import torch

from boltzclf.geometry import dot


def pair_distances(xt: torch.Tensor) -> torch.Tensor:
    """Distances ``(N, N, B)`` in nm between all atoms of positions ``xt`` ``(3, N, B)`` in nm.

    The diagonal holds 1 instead of 0, so that no pair term divides by zero there; terms must mask
    it out themselves.
    """
    return _PairDistances.apply(xt)


def _distances(xt: torch.Tensor) -> torch.Tensor:
    delta = xt[:, :, None, :] - xt[:, None, :, :]
    squared = dot(delta, delta)
    diagonal = torch.eye(xt.shape[1], dtype=torch.bool, device=xt.device)[:, :, None]
    return torch.sqrt(torch.where(diagonal, torch.ones_like(squared), squared))


class _PairDistances(torch.autograd.Function):
    """:func:`pair_distances` with the closed-form backward of the module doc."""

    @staticmethod
    def forward(xt: torch.Tensor) -> torch.Tensor:
        return _distances(xt)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (xt,) = ctx.saved_tensors
        weight = (grad + grad.transpose(0, 1)) / _distances(xt)  # zero-separation diagonal: no effect
        return torch.stack([((component[:, None, :] - component[None, :, :]) * weight).sum(1)
                            for component in xt.unbind(0)])
