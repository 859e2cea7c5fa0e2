"""An annealing bridge from a learned energy's first level to the true target, as extra SMC levels.

Replacing the learned density at the first level t_min by the true Boltzmann density in one SMC move
(:class:`~boltzclf.sampling.paths.LearnedPath` with ``final_target``) puts the whole model error into
one incremental weight; for a molecule whose learned energy is off by a few kT per configuration the
weights collapse there. The bridge spreads that step over ``n_bridge`` geometric-mean levels

    log π̃_j(x) = (1 − β_j) log p̃_θ(t_min, x) + β_j log π̃_true(x),   β_j = 1 − j/n_bridge,

j = 0 (the true target) … n_bridge (the learned first level). Between bridge levels the kernel is the
identity, so the incremental weight is (β_j − β_{j+1}) [log π̃_true(x) − log p̃_θ(t_min, x)], and MCMC
moves that leave π̃_j invariant (MALA in :func:`~boltzclf.sampling.smc.smc`, ``mcmc_last``) restore the
particles' diversity after resampling: annealed importance sampling / SMC samplers (Neal 2001;
Del Moral, Doucet & Jasra 2006) appended to the diffusion path. The final weighted particles still
target the true density exactly; the learned path supplies the basins' weights, the bridge the local
(bond, angle) detail the model gets wrong.

A path whose walk starts from exact samples of another true density (the other end of an interpolant,
e.g. vacuum frames of a solvation path) may be bridged at its top as well: ``n_top`` levels from that
density (β = 1, where the walk starts) down to the learned last level, so that neither end of the
learned path is trusted and the final log Ẑ estimates the ratio of the two true normalisers.
"""
from __future__ import annotations

import torch

from boltzclf.sampling.kernels import IDENTITY
from boltzclf.sampling.paths import target_log_prob_and_score


class BridgedPath:
    """A learned path (without final target) between annealing bridges: ``n_bridge`` levels to ``target``
    below it and, optionally, ``n_top`` levels from ``top_target`` above it.

    Level k < n_bridge is the geometric mean with the target's β_k = 1 − k/n_bridge; level
    n_bridge + i is the inner path's level i; level n_bridge + K_inner − 1 + j (j = 1 … n_top) is the
    geometric mean of the inner path's last level and ``top_target`` with β = j/n_top (the top-most
    level is ``top_target`` itself, which the inner path's start then samples: its ``log_prob`` must
    be −u of ``top_target``). Same interface as :class:`~boltzclf.sampling.paths.LearnedPath`.
    """

    def __init__(self, path, target, n_bridge: int, top_target=None, n_top: int = 0):
        if n_bridge < 1:
            raise ValueError(f"a bridge needs n_bridge >= 1 levels, got {n_bridge}")
        if getattr(path, "final_target", None) is not None:
            raise ValueError("bridge from the learned first level: build the inner path without final_target")
        if (top_target is None) != (n_top == 0) or n_top < 0:
            raise ValueError("a top bridge needs both top_target and n_top >= 1")
        self.path = path
        self.target = target
        self.n_bridge = n_bridge
        self.top_target = top_target
        self.n_top = n_top
        self.space = path.space
        self.betas = 1.0 - torch.arange(n_bridge + 1, dtype=torch.float64) / n_bridge  # β_0 = 1 … β_n = 0
        self._target_evals = 0

    @property
    def n_levels(self) -> int:
        return self.path.n_levels + self.n_bridge + self.n_top

    @property
    def times(self) -> torch.Tensor:
        """The learned time of every level ``(K,)`` float64: the bottom bridge's levels sit at the inner
        path's first time, the top bridge's at its last."""
        inner = self.path.times
        return torch.cat([inner[:1].expand(self.n_bridge), inner, inner[-1:].expand(self.n_top)])

    @property
    def n_model_evals(self) -> int:
        return self.path.n_model_evals

    @property
    def n_target_evals(self) -> int:
        return self._target_evals

    def initial(self, n: int, generator: torch.Generator, dtype: torch.dtype, device):
        return self.path.initial(n, generator, dtype, device)

    def log_density(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log π̃_k(x) (B,) float64, ∇ log π̃_k(x) like x)``."""
        top = k - (self.n_bridge + self.path.n_levels - 1)
        if top > 0:
            return self._mixed(self.top_target, top / self.n_top, self.path.n_levels - 1, x)
        if k >= self.n_bridge:
            return self.path.log_density(k - self.n_bridge, x)
        return self._mixed(self.target, float(self.betas[k]), 0, x)

    def _mixed(self, target, beta: float, level: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 − β) log p̃ of the inner path's ``level`` + β log π̃ of ``target``, and its gradient."""
        self._target_evals += x.shape[0]
        target_logp, target_score = target_log_prob_and_score(target, x)
        target_score = target_score.to(x.dtype)
        if beta == 1.0:  # the target alone: no model evaluation
            return target_logp, target_score
        model_logp, model_score = self.path.log_density(level, x)
        return (1.0 - beta) * model_logp + beta * target_logp, (1.0 - beta) * model_score + beta * target_score

    def hessian(self, k: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("bridged paths use kernels without Hessians")


class BridgeKernels:
    """The inner path's kernels between the bridges, the identity between bridge levels.

    ``n_inner_levels`` (the inner path's level count) is needed only with a top bridge: the moves above
    the inner path's last level are the identity too.
    """

    def __init__(self, kernels, n_bridge: int, n_inner_levels: int | None = None):
        if kernels.needs_hessian:
            raise ValueError("bridged paths use kernels without Hessians (posterior_variance='isotropic')")
        self.kernels = kernels
        self.n_bridge = n_bridge
        self.n_inner_moves = None if n_inner_levels is None else n_inner_levels - 1
        self.needs_hessian = False

    def _inner(self, k: int) -> bool:
        """Whether the move between levels k and k + 1 is one of the inner path's."""
        return k >= self.n_bridge and (self.n_inner_moves is None or k < self.n_bridge + self.n_inner_moves)

    def reverse(self, k: int, x_next: torch.Tensor, score_next: torch.Tensor, generator: torch.Generator,
                hessian: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A move from level k + 1 to level k: ``(x_k, log M_k(x_k | x_{k+1}))``."""
        if self._inner(k):
            return self.kernels.reverse(k - self.n_bridge, x_next, score_next, generator, hessian)
        return IDENTITY.reverse(k, x_next, score_next, generator)

    def forward_log_prob(self, k: int, x: torch.Tensor, x_next: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """log L_k(x_{k+1} | x_k) (0 for the identity)."""
        if self._inner(k):
            return self.kernels.forward_log_prob(k - self.n_bridge, x, x_next, score)
        return IDENTITY.forward_log_prob(k, x, x_next, score)
