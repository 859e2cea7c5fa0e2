"""The report figure of a reference ensemble: a free-energy surface or profile, unsampled bins blank."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from boltzclf.estimators.pmf import FreeEnergySurface


def reference_figure(surface: FreeEnergySurface, xlabel: str, ylabel: str | None, title: str,
                     populations=None, vmax: float = 12.0) -> Figure:
    """A 2-D free-energy map (``ylabel`` given; angles in radians shown in degrees) or a 1-D profile
    with ± 1 SE band, in kT above the minimum; empty bins are left blank (white), not clipped to a
    colour. ``populations`` (:class:`~boltzclf.estimators.populations.Populations`) adds a bar panel."""
    panels = 1 + (populations is not None)
    fig = Figure(figsize=(5.2 * panels, 4.2))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    f = surface.free_energy - np.min(surface.free_energy)
    if ylabel is not None:
        x, y = (np.degrees(e) for e in surface.edges)
        shown = np.ma.masked_invalid(np.where(np.isfinite(f), np.minimum(f, vmax), np.nan))
        mesh = ax.pcolormesh(x, y, shown.T, cmap="viridis", vmin=0.0, vmax=vmax)
        fig.colorbar(mesh, ax=ax, label=f"free energy / kT (capped at {vmax:g}; white: unsampled)")
        ax.set_ylabel(ylabel)
        ax.set_aspect("equal")
    else:
        centers = surface.centers[0]
        sampled = np.isfinite(f)
        ax.plot(centers[sampled], f[sampled], "o-", ms=3, color="C0")
        ax.fill_between(centers, f - surface.stderr, f + surface.stderr, color="C0", alpha=0.3,
                        label="± 1 SE (block bootstrap)")
        ax.set_ylabel("free energy / kT (gaps: unsampled)")
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    if populations is not None:
        names = [n for n in populations.names if n != "other"]
        value = populations.estimate.value.numpy()[: len(names)]
        se = populations.estimate.se.numpy()[: len(names)]
        bars = axes[1]
        bars.bar(names, np.where(value > 0, value, np.nan), yerr=se, capsize=4, color="C1")
        for i, (v, s) in enumerate(zip(value, se)):
            bars.annotate(f"{v:.3g} ± {s:.2g}" if v > 0 else "not sampled", (i, 1.0), xycoords=("data", "axes fraction"),
                          xytext=(0, -12), textcoords="offset points", ha="center", fontsize=8)
        bars.set_yscale("log")
        bars.set_ylabel("population (log scale; error bars ± 1 SE)")
        bars.set_title("basin populations")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
