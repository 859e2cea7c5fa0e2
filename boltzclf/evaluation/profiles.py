"""Log-density profiles along the line through two mixture modes, for plots of learned vs true energies."""
from __future__ import annotations

import torch

from boltzclf.evaluation.gmm_metrics import exact_marginal
from boltzclf.targets.gmm import GaussianMixture


@torch.no_grad()
def mode_line_profile(model, start: GaussianMixture, end: GaussianMixture | None, level: int,
                      n_points: int = 400, overshoot: float = 0.3) -> dict:
    """Normalised model and true log-densities on x(s) = μ_0 + s (μ_1 − μ_0), s ∈ [−overshoot, 1 + overshoot].

    Returns ``{"t", "s", "model", "true"}`` as plain lists; ``model`` is log p̃_θ(t, x) − f at grid
    ``level`` (so heights are comparable with the truth only if f and the mode masses are right).
    """
    s = torch.linspace(-overshoot, 1.0 + overshoot, n_points, dtype=torch.float64)
    mu0, mu1 = start.means[0], start.means[1]
    if model.process.kind != "interpolant":
        scale = model.process.alpha(torch.tensor(float(model.levels[level]), dtype=torch.float64))
        mu0, mu1 = scale * mu0, scale * mu1
    x = mu0 + s[:, None] * (mu1 - mu0)
    true = exact_marginal(model, start, end, level).log_prob(x)
    index = torch.full((n_points,), level, device=model.levels.device)
    learned = model.log_prob(index, x.to(model.levels.device, torch.float32)).double().cpu()
    return {"t": float(model.levels[level]), "s": s.tolist(), "model": learned.tolist(), "true": true.tolist()}
