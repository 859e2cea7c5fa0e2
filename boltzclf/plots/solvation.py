"""The report figure of a solvation workflow: ⟨∂u/∂λ⟩ with error bars and the MBAR overlap matrix per
path, and every estimator's ΔF with its error bar."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def solvation_report(results: dict, title: str) -> Figure:
    """One row per path: ⟨∂u/∂λ⟩ [kT] against λ, the overlap matrix, and ΔF ± SE [kT] by estimator."""
    paths = list(results["diagnostics"])
    fig = Figure(figsize=(15, 4.2 * len(paths)))
    axes = fig.subplots(len(paths), 3, squeeze=False)
    for row, path in zip(axes, paths):
        diag = results["diagnostics"][path]
        lam = np.asarray(diag["lambdas"])
        row[0].errorbar(lam, diag["mean_du_dlambda_kT"], yerr=diag["se_du_dlambda_kT"], fmt="o-", ms=3, capsize=2)
        row[0].set_xlabel("λ")
        row[0].set_ylabel("⟨∂u/∂λ⟩ / kT")
        row[0].set_title(f"{path}: TI integrand (±1 SE)")
        overlap = np.asarray(diag["overlap_matrix"])
        image = row[1].imshow(overlap, cmap="Blues", vmin=0.0, vmax=float(overlap.max()))
        fig.colorbar(image, ax=row[1], label="MBAR overlap O[k, l]")
        ticks = np.arange(len(lam))
        row[1].set_xticks(ticks, [f"{v:.2f}" for v in lam], rotation=90, fontsize=7)
        row[1].set_yticks(ticks, [f"{v:.2f}" for v in lam], fontsize=7)
        row[1].set_xlabel(f"window λ (smallest two-state neighbour overlap {min(diag['neighbour_overlap']):.2f})")
        row[1].set_ylabel("window λ")
        row[1].set_title(f"{path}: MBAR overlap matrix")
        names = [k for k, v in results[path].items() if isinstance(v, dict)]
        values = [results[path][k]["dF_kT"] for k in names]
        errors = [results[path][k]["se_kT"] for k in names]
        row[2].errorbar(values, np.arange(len(names)), xerr=errors, fmt="o", capsize=3)
        row[2].set_yticks(np.arange(len(names)), names)
        mbar = results[path]["mbar"]
        row[2].axvspan(mbar["dF_kT"] - 2 * mbar["se_kT"], mbar["dF_kT"] + 2 * mbar["se_kT"], color="0.85",
                       label="MBAR ± 2 SE")
        row[2].set_xlabel("ΔF = F(vacuum end) − F(solvated end) / kT")
        row[2].set_title(f"{path}: estimates (±1 SE)")
        row[2].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
