"""Training data drawn from analytic targets: a fixed dataset (as in the reference runs) or fresh samples."""
from __future__ import annotations

import torch

from boltzclf.targets.gmm import GaussianMixture


class MixtureData:
    """Batches ``(x0,)`` (diffusions) or ``(x0, x1)`` (interpolants, independent coupling).

    Parameters
    ----------
    start, end
        Data distribution at t = 0 and, for interpolants, at t = 1.
    size
        Fixed dataset size drawn once with ``seed``; 0 draws fresh samples from the training generator.
    """

    def __init__(self, start: GaussianMixture, end: GaussianMixture | None, size: int, seed: int,
                 device: torch.device, dtype: torch.dtype = torch.float32):
        self.targets = tuple(m.to(device=device, dtype=dtype) for m in (start, end) if m is not None)
        self.size = size
        self.dataset = None
        if size:
            generator = torch.Generator(device=device).manual_seed(seed)
            self.dataset = tuple(m.sample(size, generator) for m in self.targets)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """One batch, each tensor ``(batch_size, D)``."""
        if self.dataset is None:
            return tuple(m.sample(batch_size, generator) for m in self.targets)
        device = self.dataset[0].device
        return tuple(d[torch.randint(self.size, (batch_size,), generator=generator, device=device)]
                     for d in self.dataset)
