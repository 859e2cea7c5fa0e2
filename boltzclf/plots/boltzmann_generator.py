"""Report of the Boltzmann-generator workflow: Ramachandran maps, φ PMFs, ESS traces, energy histograms."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from boltzclf.core.formatting import fmt
from boltzclf.estimators.pmf import histogram_free_energy

VMAX_KT = 10.0
RAMACHANDRAN_BINS = 48
PHI_BINS = 36


def _ramachandran(ax, fig, angles: np.ndarray, log_w: np.ndarray | None, title: str) -> None:
    """Free-energy map of (φ, ψ) in kT above its minimum; unsampled bins white."""
    edges = np.linspace(-np.pi, np.pi, RAMACHANDRAN_BINS + 1)
    weights = None if log_w is None else np.exp(log_w - np.max(log_w))
    hist, _, _ = np.histogram2d(angles[:, 0], angles[:, 1], bins=[edges, edges], weights=weights)
    with np.errstate(divide="ignore"):
        f = -np.log(hist / hist.sum())
    f = f - f[np.isfinite(f)].min() if np.isfinite(f).any() else f
    shown = np.ma.masked_invalid(np.where(np.isfinite(f), np.minimum(f, VMAX_KT), np.nan))
    mesh = ax.pcolormesh(np.degrees(edges), np.degrees(edges), shown.T, cmap="viridis", vmin=0.0, vmax=VMAX_KT)
    fig.colorbar(mesh, ax=ax, label=f"free energy / kT (capped at {VMAX_KT:g}; white: unsampled)")
    ax.set_xlabel("φ / deg")
    ax.set_ylabel("ψ / deg")
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def _phi_profile(ax, angles: np.ndarray, log_w: np.ndarray | None, label: str, style: str) -> None:
    surface = histogram_free_energy(angles[:, 0], [(-np.pi, np.pi)], bins=PHI_BINS, periodic=True,
                                    log_weights=log_w, n_blocks=min(20, angles.shape[0] // 2), n_bootstrap=100)
    f = surface.free_energy - np.nanmin(np.where(np.isfinite(surface.free_energy), surface.free_energy, np.nan))
    centres = np.degrees(surface.centers[0])
    line, = ax.plot(centres, np.where(np.isfinite(f), f, np.nan), style, ms=3, label=label)
    ax.fill_between(centres, f - surface.stderr, f + surface.stderr, color=line.get_color(), alpha=0.2)


def boltzmann_generator_report(reference, samples: dict, results: dict, title: str = "") -> Figure:
    """Two rows: Ramachandran maps (reference, each method's SMC), then φ PMFs with ± 1 SE bands,
    SMC ESS/N traces and true-energy histograms.

    ``reference`` is a :class:`~boltzclf.evaluation.molecular_samples.Reference`; ``samples[(method,
    sampler)]`` holds ``angles``, ``log_w`` and (all-atom) ``energies``; ``results`` is ``results.json``.
    """
    methods = [m for m in results if m not in ("reference", "summary")]
    columns = max(3, 1 + len(methods))
    fig = Figure(figsize=(5.0 * columns, 9.0))
    axes = fig.subplots(2, columns, squeeze=False)
    ref = results["reference"]
    _ramachandran(axes[0, 0], fig, reference.angles, None,
                  f"reference MD ({ref['frames']} frames): ΔF_φ = {fmt(ref['dF_phi'], '.2f')} ± "
                  f"{fmt(ref['dF_phi_se'], '.2f')} kT")
    for ax, method in zip(axes[0, 1:], methods):
        if (method, "smc") in samples:
            s, r = samples[(method, "smc")], results[method]["smc"]
            _ramachandran(ax, fig, s["angles"], s["log_w"],
                          f"{method}: SMC to the true density, ESS/N {fmt(r['ess'], '.3f')}\n"
                          f"ΔF_φ = {fmt(r['dF_phi'], '.2f')} ± {fmt(r['dF_phi_se'], '.2f')} kT"
                          f"{' (walks confined to each side)' if 'sides' in r else ''}")
        else:
            ax.axis("off")
    for ax in axes[0, 1 + len(methods):]:
        ax.axis("off")
    pmf_ax, ess_ax, energy_ax = axes[1, 0], axes[1, 1], axes[1, 2]
    _phi_profile(pmf_ax, reference.angles, None, "reference", "k-")
    for (method, sampler), s in samples.items():
        _phi_profile(pmf_ax, s["angles"], s["log_w"] if sampler in ("smc", "reweighting") else None,
                     f"{method} / {sampler}", "o-")
    pmf_ax.set_ylim(-0.5, 15.0)
    pmf_ax.set_xlabel("φ / deg")
    pmf_ax.set_ylabel("free energy / kT (gaps: unsampled; bands ± 1 SE)")
    pmf_ax.set_title("φ PMF", fontsize=9)
    pmf_ax.legend(fontsize=7)
    for method in methods:
        trace = results[method].get("smc", {}).get("diagnostics", {}).get("ess")
        if trace:
            ess_ax.plot(range(1, len(trace) + 1), trace, label=method)
    ess_ax.set_ylim(0, 1.05)
    ess_ax.set_xlabel("SMC move (noisiest level → true density)")
    ess_ax.set_ylabel("ESS / N before resampling")
    ess_ax.set_title("SMC ESS traces", fontsize=9)
    ess_ax.legend(fontsize=8)
    low, high = np.percentile(reference.energies, [0.5, 99.5])
    bins = np.linspace(low - 0.2 * (high - low), high + 0.2 * (high - low), 60)
    energy_ax.hist(reference.energies, bins=bins, density=True, histtype="step", color="k", label="reference")
    for (method, sampler), s in samples.items():
        if "energies" in s and sampler in ("smc", "reweighting"):
            w = np.exp(s["log_w"] - np.max(s["log_w"]))
            inside = (s["energies"] >= bins[0]) & (s["energies"] <= bins[-1])
            share = w[inside].sum() / w.sum()
            energy_ax.hist(s["energies"][inside], bins=bins, weights=w[inside], density=True, histtype="step",
                           label=f"{method} / {sampler} ({share:.0%} of the weight in range)")
    energy_ax.set_xlabel("true reduced energy u(x) / kT")
    energy_ax.set_ylabel("density (of the weight in range)")
    energy_ax.set_title("energies of the weighted samples", fontsize=9)
    energy_ax.legend(fontsize=7)
    for ax in axes[1, 3:]:
        ax.axis("off")
    fig.suptitle(title or "Alanine dipeptide Boltzmann generator", fontsize=11)
    fig.tight_layout()
    return fig
