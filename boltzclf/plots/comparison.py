"""Report figure comparing training losses: learned vs true log-density profiles and ESS per level."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from boltzclf.core import atomic

COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange")


def comparison_report(results: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """Draw ``report.png``.

    Parameters
    ----------
    results
        ``{method: metrics}``; each metrics dict has ``levels`` and ``ess`` (per evaluation level) and
        ``profiles``: a list of ``{"t", "s", "model", "true", "normalisation"}`` (see
        :func:`boltzclf.evaluation.profiles.mode_line_profile`).
    path
        Output PNG.

    The profile panels compare *normalised* log-densities: each learned curve is log p̃_θ − log Ẑ with
    Ẑ the level's normaliser estimated by importance sampling from the exact marginal
    (``normalisation: "importance"``), so curves are on the truth's scale whether or not the method
    trained f, and the gap at each mode shows misallocated mass; the y-label says what is shown.
    """
    first = next(iter(results.values()))
    n_profiles = len(first["profiles"])
    fig, axes = plt.subplots(1, n_profiles + 1, figsize=(5 * (n_profiles + 1), 4))
    normalisations = {prof.get("normalisation", "model") for res in results.values() for prof in res["profiles"]}
    ylabel = "log density (nats)\nlearned: " + {
        "importance": r"$\log\tilde p_\theta - \log\hat Z_t$ (each level normalised)",
        "given": r"$\log\tilde p_\theta - \hat f$ (given normaliser)",
        "model": r"$\log\tilde p_\theta - f$ (the model's learned $f$)",
    }.get(normalisations.pop() if len(normalisations) == 1 else "", "mixed normalisations")
    for p, ax in enumerate(axes[:-1]):
        truth = first["profiles"][p]
        ax.plot(truth["s"], truth["true"], color="black", lw=2.5, label="exact")
        for (name, res), colour in zip(results.items(), COLOURS):
            prof = res["profiles"][p]
            ax.plot(prof["s"], prof["model"], color=colour, lw=1.3, ls="--", label=name)
        top = max(truth["true"])
        ax.set_ylim(top - 12.0, top + 2.0)
        ax.set_xlabel("position on the line mode 0 → mode 1")
        ax.set_ylabel(ylabel)
        ax.set_title(f"t = {truth['t']:.3g}")
        ax.legend(fontsize=8)
    ax = axes[-1]
    for (name, res), colour in zip(results.items(), COLOURS):
        label = f"{name} (mode-weight error {res['mode_weight_error']:.3f})"
        ax.semilogx(res["levels"], res["ess"], "o-", color=colour, ms=3, label=label)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("t (level)")
    ax.set_ylabel("ESS / N (exact p_t → model)")
    ax.set_title("importance-sampling efficiency per level")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return atomic.save_figure(path, fig)
    finally:
        plt.close(fig)
