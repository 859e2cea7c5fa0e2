"""Exact-marginal models with known flaws, shared by tests: per-level offsets whose true free energies are known."""
import torch

from boltzclf.models.analytic import MixtureMarginalEnergy


class OffsetMarginalEnergy(MixtureMarginalEnergy):
    """Exact marginals plus a per-level constant: log p̃(t_i, x) = log p_{t_i}(x) + c_i, so the true
    free energies (log-normalisers) are f_i = c_i, i.e. c − c[−1] in the gauge f[−1] = 0. f is learnable."""

    def __init__(self, start, process, levels, offsets):
        super().__init__(start, process, levels)
        self.register_buffer("offsets", offsets.to(torch.float64))
        del self.free_energies
        self.free_energies = torch.nn.Parameter(torch.zeros(len(levels), dtype=torch.float64))

    def log_prob_unnormalised(self, t, x):
        index = (t.double()[:, None] - self.levels.double()[None]).abs().argmin(1)
        return super().log_prob_unnormalised(t, x) + self.offsets[index].to(x.dtype)
