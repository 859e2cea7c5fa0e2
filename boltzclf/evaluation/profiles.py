"""Log-density profiles along the line through two mixture modes, for plots of learned vs true energies."""
from __future__ import annotations

import math

import torch

from boltzclf.evaluation.gmm_metrics import exact_marginal, model_dtype
from boltzclf.targets.gmm import GaussianMixture


@torch.no_grad()
def mode_line_profile(model, start: GaussianMixture, end: GaussianMixture | None, level: int,
                      free_energy: float | None = None, n_points: int = 400, overshoot: float = 0.3,
                      n_normalisation: int = 4096, seed: int = 0) -> dict:
    """Normalised model and true log-densities on x(s) = μ_0 + s (μ_1 − μ_0), s ∈ [−overshoot, 1 + overshoot].

    Parameters
    ----------
    free_energy
        The log-normaliser (nats) to subtract from log p̃_θ at grid ``level``, e.g. the post-hoc
        fitted f̂ of :func:`~boltzclf.evaluation.gmm_metrics.evaluate`. None (default) normalises the
        level on its own by importance sampling from the exact marginal p_t:
        log Ẑ = log mean_n p̃_θ(x_n)/p_t(x_n), x_n ~ p_t (``n_normalisation`` draws with ``seed``).
        That makes the curve a proper density whatever the model learned of f, so its gap to the truth
        at each mode is the log of the mass ratio m_k/w_k plus any shape error.

    Returns
    -------
    dict
        ``{"t", "s", "model", "model_raw", "true", "normalisation", "log_normaliser"}``, plain lists and
        floats (nats): ``model`` = log p̃_θ(t, x) − ``log_normaliser``, with ``normalisation``
        ``"importance"`` or ``"given"``; ``model_raw`` = log p̃_θ(t, x) − f_level with the model's own f.
    """
    s = torch.linspace(-overshoot, 1.0 + overshoot, n_points, dtype=torch.float64)
    mu0, mu1 = start.means[0], start.means[1]
    if model.process.kind != "interpolant":
        scale = model.process.alpha(torch.tensor(float(model.levels[level]), dtype=torch.float64))
        mu0, mu1 = scale * mu0, scale * mu1
    x = mu0 + s[:, None] * (mu1 - mu0)
    marginal = exact_marginal(model, start, end, level)
    true = marginal.log_prob(x)
    unnormalised = _unnormalised(model, level, x)
    if free_energy is None:
        draws = marginal.sample(n_normalisation, torch.Generator().manual_seed(seed))
        log_w = _unnormalised(model, level, draws) - marginal.log_prob(draws)
        log_normaliser, how = float(torch.logsumexp(log_w, 0)) - math.log(n_normalisation), "importance"
    else:
        log_normaliser, how = float(free_energy), "given"
    raw = unnormalised - float(model.free_energies[level])
    return {"t": float(model.levels[level]), "s": s.tolist(), "model": (unnormalised - log_normaliser).tolist(),
            "model_raw": raw.tolist(), "true": true.tolist(), "normalisation": how,
            "log_normaliser": log_normaliser}


def _unnormalised(model, level: int, x: torch.Tensor) -> torch.Tensor:
    """log p̃_θ(t_level, x) in the model's dtype and device, returned float64 on CPU."""
    device, dtype = model.levels.device, model_dtype(model)
    times = torch.full((x.shape[0],), float(model.levels[level]), dtype=dtype, device=device)
    return model.log_prob_unnormalised(times, x.to(device, dtype)).to(torch.float64).cpu()
