"""Selecting the atoms of many small tuples from batched positions, and summing gradients back.

Forward, the atoms of each tuple are gathered with ``index_select``. Backward, gradients with
respect to the selected positions must be summed into the atoms; the plain ``index_select`` backward
is a scatter-add, which ``torch.compile`` turns into per-element atomic additions on CPU (slow, and
racy in torch 2.13 after an in-graph permute). :meth:`AtomSelection.accumulate` instead gathers, for each atom, the
gradients of every place it was selected (an inverse index, with padding masked out) and sums them:
plain vectorised loops along the batch, on CPU and CUDA alike. The sum runs column by column of the
inverse index (one gather per column, added elementwise): written as a reduction over the inverse
index's short axis, inductor vectorises along that axis instead, with one scalar gather per sample
and tuple, which made the backward pass of the bonded terms 2 to 3 times slower.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def inverse_index(index: np.ndarray, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """For each atom, the positions in ``index`` that select it.

    Returns
    -------
    places
        int64 ``(n_atoms, max_count)``, rows padded with 0 (``max_count`` is at least 1).
    present
        bool ``(n_atoms, max_count)``: which entries of ``places`` are real (not padding).
    """
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    found = [np.flatnonzero(index == atom) for atom in range(n_atoms)]
    width = max([1] + [len(p) for p in found])
    places = np.zeros((n_atoms, width), dtype=np.int64)
    present = np.zeros((n_atoms, width), dtype=bool)
    for atom, p in enumerate(found):
        places[atom, :len(p)] = p
        present[atom, :len(p)] = True
    return places, present


class AtomSelection(nn.Module):
    """The atoms of ``n_terms`` tuples of ``k`` atoms each, from positions ``xt`` ``(3, N, B)``.

    Parameters
    ----------
    atoms
        Atom indices ``(n_terms, k)`` (e.g. the pairs of bonds, the quadruples of torsions).
    n_atoms
        N.
    """

    def __init__(self, atoms: np.ndarray, n_atoms: int):
        super().__init__()
        atoms = np.asarray(atoms, dtype=np.int64)
        self.atoms_per_term = atoms.shape[1]
        self.register_buffer("index", torch.as_tensor(atoms.reshape(-1)), persistent=False)
        places, present = inverse_index(atoms, n_atoms)
        self.register_buffer("places", torch.as_tensor(places), persistent=False)
        self.register_buffer("present", torch.as_tensor(present[:, :, None]), persistent=False)

    def select(self, xt: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``k`` tensors ``(3, n_terms, B)``: the positions of each tuple's first, second, ... atom."""
        selected = xt.index_select(1, self.index)
        return selected.reshape(3, -1, self.atoms_per_term, xt.shape[2]).unbind(2)

    def accumulate(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Per-atom sums ``(3, N, B)`` of ``k`` per-tuple tensors ``(3, n_terms, B)`` (as :meth:`select`
        returns them): the adjoint of :meth:`select`, written as gathers (module doc)."""
        stacked = torch.stack(parts, dim=2).reshape(3, -1, parts[0].shape[2])
        if stacked.shape[1] == 0:  # a force without terms
            return stacked.new_zeros(3, self.places.shape[0], stacked.shape[2])
        columns = [torch.where(present, stacked.index_select(1, places), 0.0)
                   for places, present in zip(self.places.unbind(1), self.present.unbind(1))]
        return sum(columns[1:], columns[0])
