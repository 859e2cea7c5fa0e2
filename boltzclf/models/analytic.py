"""Exact time-dependent energies of Gaussian-mixture targets, behind the same interface as learned ones.

:class:`MixtureMarginalEnergy` returns the exact normalised log p_t, so its free energies are all 0.
It is the reference "perfect model" for testing losses, metrics and samplers. A particle mixture
(:meth:`~boltzclf.targets.gmm.GaussianMixture.on_centred_subspace`) gives a particle model: inputs and
noise are centred and densities count d = 3(n_atoms − 1) dimensions, as for learned molecular energies.
"""
from __future__ import annotations

import torch

from boltzclf.models.energy import TimeDependentEnergy
from boltzclf.targets.gmm import GaussianMixture, marginal_log_prob


class MixtureMarginalEnergy(TimeDependentEnergy):
    """U(t, x) = −log p_t(x) for a mixture target under ``process`` (``end``: interpolant's t = 1 target).

    Evaluated in the input's dtype; ``levels`` ``(n_levels,)`` is the grid the losses draw from.
    ``particles`` follows ``start`` (then ``x`` is ``(B, n_atoms, 3)`` and diffusions only).
    """

    def __init__(self, start: GaussianMixture, process, levels: torch.Tensor, end: GaussianMixture | None = None):
        super().__init__()
        self._init_geometry(process, levels, 1.0, start.event_shape, particles=start.particles)
        self.start = start
        self.end = end
        self.register_buffer("free_energies", torch.zeros(len(levels)))

    def log_prob_unnormalised(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Exact log p_t(x), ``(B,)``."""
        start = self.start.to(device=x.device, dtype=x.dtype)
        end = self.end.to(device=x.device, dtype=x.dtype) if self.end is not None else None
        return marginal_log_prob(start, self.process, t.to(x.dtype), x, end)
