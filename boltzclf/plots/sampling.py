"""Figure of a sampler's weight diagnostics: ESS/N along the path and where groups resampled."""
from __future__ import annotations

import matplotlib.pyplot as plt


def ess_trace_figure(diagnostics: dict, title: str = ""):
    """ESS/N after each move (top level on the left, level 0 on the right) with resampling events.

    ``diagnostics`` holds ``ess`` and ``resampled`` lists (SMC, AIS); samplers without a weight trace
    (ancestral, Langevin, ODE) show their final ESS/N (1 for unweighted samples) as a single point.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ess = diagnostics.get("ess")
    if ess:
        moves = range(1, len(ess) + 1)
        ax.plot(moves, ess, marker=".", color="tab:blue", label="ESS/N before resampling")
        events = [m for m, r in zip(moves, diagnostics["resampled"]) if r > 0]
        if events:
            ax.vlines(events, 0, 1, colors="tab:red", alpha=0.3, label="resampling (any group)")
        ax.set_xlabel("move (from the noisiest level towards level 0)")
    else:
        ax.plot([1], [diagnostics.get("ess_final", 1.0)], "o", color="tab:blue", label="final ESS/N")
        ax.set_xlabel("(no weight trace for this sampler)")
    if "ess_final" in diagnostics:
        ax.axhline(diagnostics["ess_final"], color="black", ls="--", lw=1,
                   label=f"final ESS/N = {diagnostics['ess_final']:.3f}")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("ESS / N (Kish)")
    ax.set_title(title or "sampler weights", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig
