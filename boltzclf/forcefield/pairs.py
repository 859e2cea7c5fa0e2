"""Atom-pair index lists and batched pair distances (dense all-pairs, no cutoff)."""
from __future__ import annotations

import numpy as np
import torch

from boltzclf.forcefield.gather import AtomSelection


def unordered_pairs(n_atoms: int) -> np.ndarray:
    """All pairs ``i < j``: int64 array ``(n_atoms (n_atoms - 1) / 2, 2)``, row-major order."""
    i, j = np.triu_indices(n_atoms, k=1)
    return np.stack([i, j], axis=1).astype(np.int64)


def pair_distances(xt: torch.Tensor, pairs: AtomSelection) -> torch.Tensor:
    """Distances ``(n_pairs, B)`` in nm of the atom pairs that ``pairs`` selects.

    ``xt`` holds positions component-first and batch-last, ``(3, N, B)`` in nm (see
    :mod:`boltzclf.forcefield.field`); ``pairs`` selects the ``(n_pairs, 2)`` pair list.
    """
    first, second = pairs(xt)
    delta = second - first
    return torch.sqrt((delta * delta).sum(0))
