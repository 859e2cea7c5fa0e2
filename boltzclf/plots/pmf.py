"""Figures of free-energy surfaces: a 2-D map with contours and 1-D PMFs with error bands."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from boltzclf.estimators.pmf import FreeEnergySurface


def _axis(values: np.ndarray, degrees: bool) -> np.ndarray:
    return np.degrees(values) if degrees else values


def pmf_figure(surface_2d: FreeEnergySurface | None, profiles: list[FreeEnergySurface],
               labels: list[str], degrees: list[bool], vmax: float = 12.0, title: str = "") -> Figure:
    """A figure: the 2-D surface (if given, kT above its minimum, capped at ``vmax``; unsampled bins
    left blank, not painted the colour of the cap) and the 1-D profiles (kT above their minima, shaded
    ± 1 standard error; unsampled bins are gaps). Angles are shown in degrees."""
    panels = len(profiles) + (surface_2d is not None)
    fig = Figure(figsize=(4.6 * panels, 4.0))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if surface_2d is not None:
        ax, axes = axes[0], axes[1:]
        f = surface_2d.free_energy - np.min(surface_2d.free_energy)
        x, y = (_axis(e, d) for e, d in zip(surface_2d.edges, degrees))
        shown = np.ma.masked_invalid(np.where(np.isfinite(f), np.minimum(f, vmax), np.nan))
        image = ax.pcolormesh(x, y, shown.T, cmap="viridis", vmin=0.0, vmax=vmax)
        fig.colorbar(image, ax=ax, label=f"free energy / kT (capped at {vmax:g}; white: unsampled)")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
    for ax, profile, label, deg in zip(axes, profiles, labels, degrees):
        f = profile.free_energy - np.min(profile.free_energy)
        x = _axis(profile.centers[0], deg)
        ax.plot(x, f, color="C0")
        ax.fill_between(x, f - profile.stderr, f + profile.stderr, color="C0", alpha=0.3,
                        label="± 1 SE (block bootstrap)")
        ax.set_xlim(*_axis(profile.edges[0][[0, -1]], deg))
        ax.set_xlabel(label)
        ax.set_ylabel("PMF / kT")
        ax.legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
