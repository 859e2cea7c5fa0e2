"""Report of the SMC comparison workflow: ESS/N along the path per target and method, and the headline errors."""
from __future__ import annotations

import matplotlib.pyplot as plt

COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange")


def smc_report(results: dict, traces: dict, title: str = ""):
    """One panel per target with every method's ESS/N trace, plus a table of the headline numbers.

    ``traces[target][method]`` is the ESS/N list (one value per move, noisiest level first);
    ``results[target][method]`` holds ``ess_final``, ``log_z_error``, ``log_z_se`` and ``mode_weight_error``.
    """
    targets = list(traces)
    fig, axes = plt.subplots(1, len(targets) + 1, figsize=(5.2 * (len(targets) + 1), 4.2))
    for ax, target in zip(axes[:-1], targets):
        for colour, (method, ess) in zip(COLOURS, traces[target].items()):
            ax.plot(range(1, len(ess) + 1), ess, color=colour, label=method)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("SMC move (noisiest level → true target)")
        ax.set_ylabel("ESS / N before resampling")
        ax.set_title(f"{target}: SMC to the true density")
        ax.legend(fontsize=8)
    rows, labels = [], []
    for target in targets:
        for method, r in results[target].items():
            labels.append(f"{target} / {method}")
            rows.append([f"{r['ess_final']:.3f}", f"{r['ess_min']:.3f}",
                         f"{r['log_z_error']:.3f} ± {r['log_z_se']:.3f}", f"{r['mode_weight_error']:.3f}"])
    table_ax = axes[-1]
    table_ax.axis("off")
    table = table_ax.table(cellText=rows, rowLabels=labels, loc="center",
                           colLabels=["ESS/N final", "ESS/N min", "|log Ẑ − log Z|", "mode error"])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.4)
    fig.suptitle(title or "SMC towards the true target with learned intermediate energies")
    fig.tight_layout()
    return fig
