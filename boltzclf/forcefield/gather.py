"""Selecting atoms from batched positions, with a backward pass that gathers instead of scattering.

The gradient of ``xt.index_select(1, index)`` is a scatter-add into the atoms, which ``torch.compile``
turns into per-element atomic additions on CPU (slow, and racy in torch 2.13 after an in-graph
permute). Here the backward pass instead gathers, for each atom, the gradients of every place it was
selected (an inverse index padded with a zero row) and sums them: plain vectorised loops along the
batch, on CPU and CUDA alike. The sum runs column by column of the inverse index (one gather per
column, added elementwise): written as a reduction over the inverse index's short axis, inductor
vectorises along that axis instead, with one scalar gather per sample and term, which made the
backward pass of the bonded terms 2 to 3 times slower.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def inverse_index(index: np.ndarray, n_atoms: int) -> np.ndarray:
    """For each atom, the positions in ``index`` that select it, padded with ``len(index)``.

    Returns
    -------
    numpy.ndarray
        int64 ``(n_atoms, max_count)``; ``max_count`` is at least 1.
    """
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    places = [np.flatnonzero(index == atom) for atom in range(n_atoms)]
    width = max([1] + [len(p) for p in places])
    inverse = np.full((n_atoms, width), len(index), dtype=np.int64)
    for atom, p in enumerate(places):
        inverse[atom, :len(p)] = p
    return inverse


class _Select(torch.autograd.Function):
    """``xt.index_select(1, index)`` whose backward gathers through ``inverse`` (see module doc)."""

    @staticmethod
    def forward(xt: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        return xt.index_select(1, index)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[2])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        padded = torch.cat([grad, grad.new_zeros(grad.shape[0], 1, grad.shape[2])], dim=1)
        columns = [padded.index_select(1, column) for column in inverse.unbind(1)]
        return sum(columns[1:], columns[0]), None, None


class AtomSelection(nn.Module):
    """The atoms of each of ``n_terms`` terms, ``k`` atoms per term, from positions ``xt`` ``(3, N, B)``.

    Parameters
    ----------
    atoms
        Atom indices ``(n_terms, k)`` (e.g. the pairs of a pair list, the quadruples of torsions).
    n_atoms
        N.
    """

    def __init__(self, atoms: np.ndarray, n_atoms: int):
        super().__init__()
        atoms = np.asarray(atoms, dtype=np.int64)
        self.atoms_per_term = atoms.shape[1]
        self.register_buffer("index", torch.as_tensor(atoms.reshape(-1)), persistent=False)
        self.register_buffer("inverse", torch.as_tensor(inverse_index(atoms, n_atoms)), persistent=False)

    def forward(self, xt: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``k`` tensors ``(3, n_terms, B)``: the positions of each term's first, second, ... atom."""
        selected = _Select.apply(xt, self.index, self.inverse)
        return selected.reshape(3, -1, self.atoms_per_term, xt.shape[2]).unbind(2)
