"""The true end densities of an interpolant as two extra classes (METHOD.md §3.5, "with_target").

When the densities at t = 0 and t = 1 are known up to their normalisers, π̃_0 = e^{−u_0} and
π̃_1 = e^{−u_1} (e.g. the solvated and vacuum Boltzmann densities of a molecule), each can be
classified against the learned energy's nearest level: samples x0 ~ π_0 against samples of the first
level t_min, with logits −u_0(x) − g_0 (class π_0) and ln p̃_θ(t_min, x) − f_first (class t_min); and
x1 ~ π_1 against the last level t_max alike. The binary cross-entropy

    L_0 = ½ softplus(ℓ_θ(x0) − a_0(x0)) + ½ softplus(a_0(x_tmin) − ℓ_θ(x_tmin)),   a_0 = −u_0 − g_0,

is minimised when p̃_θ(t_min, ·)/π̃_0 equals the true density ratio p_{t_min}/π_0 times e^{g_0 − f_first}:
it trains the learned energy's *shape* at t_min towards the true energy (the importance corrections of
the TI estimate then have small variance) and gives the scalars g_0, g_1 (``model.end_free_energies``,
in the gauge of the level free energies f; profiled out per batch, see :func:`_end_loss`) so that, with
f consistent along the grid (DiffCLF), g_0 − g_1 estimates ln Z_0 − ln Z_1 directly.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Energy = Callable[[torch.Tensor], torch.Tensor]


class EndpointClassification:
    """``inner`` loss + weight·(L_0 + L_1): the end densities classified against the first and last level.

    Parameters
    ----------
    inner
        The level loss (DSM or DiffCLF), called on the same batch.
    start_energy, end_energy
        Reduced energies u_0 and u_1 [kT] of configurations ``(B, *event)`` → ``(B,)``, evaluated
        without gradients (constants of the loss).
    weight
        Weight of the two end terms.
    """

    def __init__(self, inner, start_energy: Energy, end_energy: Energy, weight: float = 1.0):
        self.inner = inner
        self.energies = (start_energy, end_energy)
        self.weight = weight

    def __call__(self, model, batch: tuple[torch.Tensor, ...], generator: torch.Generator | None
                 ) -> dict[str, torch.Tensor]:
        out = self.inner(model, batch, generator)
        x0, x1 = batch
        ends = (_end_loss(model, 0, x0, (x0, x1), self.energies[0], generator),
                _end_loss(model, model.n_levels - 1, x1, (x0, x1), self.energies[1], generator))
        clf_ends = ends[0] + ends[1]
        return {**out, "loss": out["loss"] + self.weight * clf_ends, "clf_ends": clf_ends.detach()}


def _end_loss(model, level: int, data: torch.Tensor, pair: tuple[torch.Tensor, torch.Tensor], energy: Energy,
              generator: torch.Generator | None) -> torch.Tensor:
    """Binary cross-entropy ``(B,)`` of end class (samples ``data``) against grid level ``level``.

    The end class's normaliser g is profiled out: set to the value that minimises this batch's loss
    (a one-dimensional convex problem, :func:`profiled_offset`), stored in ``model.end_free_energies``
    (so the trainer's EMA averages it over steps) and held fixed in the gradient. A learnable g would
    have to travel hundreds of kT (ln p̃_θ and −u differ by the absolute log-partition functions) at
    the optimiser's step size.
    """
    end_margin, level_margin = end_margins(model, level, data, pair, energy, generator)
    index = 0 if level == 0 else 1
    with torch.no_grad():
        g = profiled_offset(end_margin.double(), level_margin.double(), float(model.end_free_energies[index]))
        model.end_free_energies[index] = g
    return 0.5 * (F.softplus(end_margin + g) + F.softplus(-level_margin - g))


def end_margins(model, level: int, data: torch.Tensor, pair: tuple[torch.Tensor, torch.Tensor], energy: Energy,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """m(x) = ln p̃_θ(t_level, x) − f_level + u(x) ``(B,)`` at the end-class samples ``data`` and at
    samples of grid level ``level`` made from ``pair``; m + g is the level logit minus the end-class
    logit (> 0 votes for the level). ``u`` is evaluated without gradients."""
    b = data.shape[0]
    t = model.levels[level].to(data.dtype).expand(b)
    x_level = model.process.corrupt(pair, t, model.noise_like(data, generator))
    x = torch.cat([data, x_level])
    with torch.no_grad():
        u = energy(x.detach()).to(x.dtype)
    m = model.log_prob_unnormalised(torch.cat([t, t]), x) - model.free_energies[level].to(x.dtype) + u
    return m[:b], m[b:]


def profiled_offset(end_margin: torch.Tensor, level_margin: torch.Tensor, start: float = 0.0,
                    iterations: int = 50) -> float:
    """The g minimising ½ mean softplus(a + g) + ½ mean softplus(−b − g) over the end samples' margins
    ``end_margin`` a and the level samples' ``level_margin`` b (damped Newton from ``start``, steps of
    at most 10; where the two sets separate completely the minimiser is at ±∞ and the last iterate is
    returned)."""
    g = float(start)
    if not (abs(g) < 1e6):
        g = 0.0
    centre = float(-0.5 * (end_margin.median() + level_margin.median()))
    g = centre if abs(g - centre) > 50.0 else g  # far off (e.g. the first call): start between the sets
    for _ in range(iterations):
        p_end, p_level = torch.sigmoid(end_margin + g), torch.sigmoid(level_margin + g)
        grad = 0.5 * float(p_end.mean() - (1.0 - p_level).mean())
        hess = 0.5 * float((p_end * (1 - p_end)).mean() + (p_level * (1 - p_level)).mean())
        step = max(-10.0, min(10.0, -grad / max(hess, 1e-12)))
        g += step
        if abs(step) < 1e-10:
            break
    return g
