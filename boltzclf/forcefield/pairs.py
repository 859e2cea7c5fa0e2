"""Atom-pair index lists and batched pair distances (dense all-pairs, no cutoff)."""
from __future__ import annotations

import numpy as np
import torch


def unordered_pairs(n_atoms: int) -> np.ndarray:
    """All pairs ``i < j``: int64 array ``(n_atoms (n_atoms - 1) / 2, 2)``, row-major order."""
    i, j = np.triu_indices(n_atoms, k=1)
    return np.stack([i, j], axis=1).astype(np.int64)


def pair_distances(x: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Distances ``(B, n_pairs)`` in nm between atoms ``first[p]`` and ``second[p]`` of ``x`` ``(B, N, 3)``."""
    delta = x.index_select(1, second) - x.index_select(1, first)
    return torch.sqrt((delta * delta).sum(-1))
