"""SMC with its independent groups spread over the ranks of a torch.distributed process group.

The G groups of :func:`~boltzclf.sampling.smc.smc` are independent SMC runs (resampling happens within
a group), so rank r of W runs G/W of them on its own random stream (``stream_seed(seed, r)``) and no
particle ever moves between processes. Only per-group scalars travel: the groups' log Ẑ_g are
gathered, so log Ẑ, its standard error and the normalisation of the pooled weights are global, and
the diagnostics (ESS trace, resampling fractions, acceptance, evaluation counts) are reduced over
ranks. Each rank keeps its own particles with globally normalised log-weights, so weighted
estimates are sums over ranks (:func:`weighted_sum`). With one process this is :func:`smc` with the
generator seeded by ``seed``; with W processes the result is a different draw of the same estimator
(equal in distribution, not bitwise), and MALA step sizes adapt per rank.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from boltzclf.core import distributed
from boltzclf.sampling.smc import SMCResult, SMCSettings, pooled_log_z, smc


def distributed_smc(path, kernels, settings: SMCSettings, seed: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu", progress: bool = False) -> SMCResult:
    """Run this rank's share of the SMC groups and combine the per-group results over all ranks.

    Parameters
    ----------
    path, kernels, dtype, device, progress
        As for :func:`~boltzclf.sampling.smc.smc`.
    settings
        The *global* settings: ``n_particles`` and ``n_groups`` over all ranks (both multiples of the
        world size W).
    seed
        Base seed; rank r draws from ``stream_seed(seed, r)``.

    Returns
    -------
    SMCResult
        This rank's ``N/W`` particles (``samples``, ``ancestors`` as global particle indices) with
        log-weights normalised over all ranks (logsumexp over every rank's weights is 0); global
        ``log_z``, ``log_z_se`` and ``log_z_groups`` ``(G,)``; diagnostics averaged (ESS, resampling,
        acceptance) or summed (evaluation counts, non-finite moves) over ranks; ``wall_s`` the slowest
        rank's.

    Raises
    ------
    BoltzclfError
        When the world size does not divide the number of groups.
    """
    world, rank = distributed.world_size(), distributed.rank()
    distributed.require_shareable(settings.n_groups, "n_groups", world)
    local = dataclasses.replace(settings, n_particles=settings.n_particles // world,
                                n_groups=settings.n_groups // world)
    generator = torch.Generator(device=device).manual_seed(distributed.stream_seed(seed, rank))
    result = smc(path, kernels, local, generator, dtype, device, progress)
    if world == 1:
        return result
    log_z_groups = torch.cat(_gather(result.log_z_groups))
    log_z, log_z_se = pooled_log_z(log_z_groups)
    # smc normalised this rank's pooled weights by the sum of its own groups' Ẑ_g
    shift = torch.logsumexp(result.log_z_groups, 0) - torch.logsumexp(log_z_groups, 0)
    return dataclasses.replace(
        result, log_weights=result.log_weights + shift, ancestors=result.ancestors + rank * local.n_particles,
        log_z=log_z, log_z_se=log_z_se, log_z_groups=log_z_groups,
        ess=_mean(result.ess), resampled=_mean(result.resampled), acceptance=_mean(result.acceptance),
        step_sizes=_mean(result.step_sizes), n_model_evals=_sum(result.n_model_evals),
        n_target_evals=_sum(result.n_target_evals), n_nonfinite=_sum(result.n_nonfinite),
        wall_s=max(distributed.all_gather_object(result.wall_s)))


def weighted_sum(values: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    """``Σ_i w_i values_i`` over the particles of every rank (a weighted mean when the log-weights
    are globally normalised, as :func:`distributed_smc` returns them).

    ``values`` ``(n, ...)`` and ``log_weights`` ``(n,)`` are this rank's; the result has shape
    ``values.shape[1:]`` in float64 on every rank.
    """
    weights = torch.exp(log_weights.to(torch.float64)).reshape(-1, *([1] * (values.dim() - 1)))
    total = (weights * values.to(torch.float64)).sum(0)
    if distributed.world_size() > 1:
        dist.all_reduce(total)
    return total


def _gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape on all ranks), in rank order."""
    parts = [torch.empty_like(tensor) for _ in range(distributed.world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def _mean(tensor: torch.Tensor) -> torch.Tensor:
    return torch.stack(_gather(tensor.to(torch.float64))).mean(0)


def _sum(count: int) -> int:
    return sum(distributed.all_gather_object(int(count)))

