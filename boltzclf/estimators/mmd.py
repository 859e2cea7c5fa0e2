"""Maximum mean discrepancy between two samples (Gaussian kernel, median-heuristic bandwidth)."""
from __future__ import annotations

import torch


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD between samples ``x`` ``(N, D)`` and ``y`` ``(M, D)``.

    The kernel is exp(−‖a − b‖²/(2h²)); ``h`` defaults to the median pairwise distance of the pooled
    sample. Returns MMD² (can be slightly negative for identical distributions).
    """
    x, y = x.to(torch.float64), y.to(torch.float64)
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).pow(2)
    if bandwidth is None:
        bandwidth = float(d2[d2 > 0].median().sqrt()) if (d2 > 0).any() else 1.0
    k = torch.exp(-d2 / (2.0 * bandwidth**2))
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(xx + yy - 2.0 * kxy.mean())
