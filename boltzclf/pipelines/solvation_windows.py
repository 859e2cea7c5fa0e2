"""The classical solvation free energy of a molecule: λ windows sampled by batched dynamics, then MBAR,
TI, BAR and one-sided EXP, each in kT, kJ/mol and kcal/mol.

Every window of a path runs in one tensor with :func:`boltzclf.dynamics.engine.simulate_batched`
(``walkers`` independent walkers per λ, each at its own λ; the torch force field: for alanine
dipeptide 23–27× the throughput of one OpenMM context on 2 CPU cores,
``benchmarks/results/dynamics_2cpu.json``), into ``OUT/<path>/dynamics`` (resumable, mdtraj-readable).
The analysis then

1. computes ∂u/∂λ of every frame at its own λ (autograd) and, per window, cuts the equilibration and
   thins by the statistical inefficiency of ∂u/∂λ and of the reduced potential, whichever is longer
   (:func:`~boltzclf.estimators.alchemical.decorrelate`; ∂u/∂λ alone is constant at λ = 0 of
   ``gb_charges``);
2. evaluates the kept frames' reduced energies at every λ (the MBAR matrix);
3. estimates ΔF = F(λ = 0, the vacuum end) − F(λ = 1, the solvated end) with each estimator.

ΔF is positive when solvation is favourable (ΔF = −ΔG_solv).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from boltzclf.core import distributed, rundir
from boltzclf.core.config import to_dict
from boltzclf.dynamics.config import BatchedMDConfig
from boltzclf.dynamics.engine import simulate_batched
from boltzclf.dynamics.output import load_frames, read_results
from boltzclf.estimators.alchemical import bar_chain, decorrelate, exponential_averaging, mbar, \
    thermodynamic_integration
from boltzclf.estimators.estimate import KJ_PER_KCAL, Estimate
from boltzclf.forcefield.solvation import du_dlambda, reduced_energies, solvation_field
from boltzclf.energy.units import kt_kj_per_mol

log = logging.getLogger(__name__)


@dataclass
class WindowSamples:
    """Decorrelated samples of every window of one path.

    Attributes: ``lambdas`` ``(K,)``; ``positions`` ``(n, N, 3)`` nm, window-major; ``counts`` ``(K,)``;
    ``u_kn`` ``(K, n)`` reduced energies [kT] of every sample at every λ; ``slope`` ``(n,)`` ∂u/∂λ
    [kT] at the sample's own λ; ``g`` ``(K,)`` statistical inefficiencies [frames]; ``t0`` ``(K,)``
    equilibration cuts [frames]; ``frames`` recorded frames per walker; ``dynamics`` the run's results;
    ``evaluations`` force-field evaluations of the analysis; ``trajectory`` ``(F, K·W, N, 3)`` [nm]
    every recorded frame of every walker.
    """

    lambdas: np.ndarray
    positions: torch.Tensor
    counts: np.ndarray
    u_kn: np.ndarray
    slope: np.ndarray
    g: np.ndarray
    t0: np.ndarray
    frames: int
    dynamics: dict
    evaluations: int
    trajectory: torch.Tensor

    def window(self, k: int) -> slice:
        """The samples of window k."""
        start = int(self.counts[:k].sum())
        return slice(start, start + int(self.counts[k]))


def window_dynamics(system, path: str, lambdas: np.ndarray, dynamics: BatchedMDConfig, out: Path,
                    device: torch.device) -> dict:
    """Run (or resume) every window of ``path`` into ``out`` (``dynamics.walkers`` walkers per λ)."""
    config = dataclasses.replace(dynamics, walkers=dynamics.walkers * len(lambdas), device=str(device))
    walker_lambdas = torch.as_tensor(lambdas, dtype=torch.float64).repeat_interleave(dynamics.walkers)
    resolved = {"system": system.spec.name, "path": path, "lambdas": lambdas.tolist(), "dynamics": to_dict(config)}
    distributed.on_main(lambda: rundir.prepare(out, resolved, schema={"dynamics": type(config)}, seed=config.seed,
                                                 device=str(device)))
    return simulate_batched(system, config, out, solvation=(path, walker_lambdas))


def collect_windows(system, path: str, lambdas: np.ndarray, walkers: int, out: Path) -> WindowSamples:
    """Decorrelated samples of every window of a finished :func:`window_dynamics` run ``out``."""
    field = solvation_field(system, path)
    temperature = system.temperature
    frames = torch.from_numpy(load_frames(out)).to(torch.float64)  # (F, K·W, N, 3)
    n_frames, n_walkers = frames.shape[:2]
    own = torch.as_tensor(lambdas).repeat_interleave(walkers).repeat(n_frames)  # frame-major, like frames
    slopes = du_dlambda(field, frames.reshape(-1, *frames.shape[2:]), own, temperature)
    slopes = slopes.reshape(n_frames, n_walkers).T  # (K·W, F)
    potential = np.load(out / "energies.npz")["reduced_energy"].T  # (K·W, F) kT at each walker's own λ
    positions, slope, counts, g, t0 = [], [], [], [], []
    for k in range(len(lambdas)):
        walkers_k = slice(k * walkers, (k + 1) * walkers)
        series = slopes[walkers_k]  # (W, F)
        cut = decorrelate(series.numpy(), potential[walkers_k])
        kept = frames[cut.frames][:, k * walkers:(k + 1) * walkers]  # (F', W, N, 3)
        positions.append(kept.reshape(-1, *kept.shape[2:]))
        slope.append(series[:, cut.frames].T.reshape(-1))
        counts.append(positions[-1].shape[0])
        g.append(cut.g)
        t0.append(cut.t0)
    positions = torch.cat(positions)
    u_kn = reduced_energies(field, positions, lambdas, temperature).numpy()
    dynamics = {key: value for key, value in (read_results(out) or {}).items() if key != "software"}
    return WindowSamples(lambdas, positions, np.array(counts), u_kn, torch.cat(slope).numpy(), np.array(g),
                         np.array(t0), n_frames, dynamics, n_frames * n_walkers + positions.shape[0] * len(lambdas),
                         frames)


def classical_estimates(samples: WindowSamples, temperature: float, wall_s: float) -> tuple[dict, dict]:
    """ΔF = F(λ=0) − F(λ=1) by MBAR, TI, BAR and EXP (from the solvated end), as result records, plus
    the diagnostics (MBAR convergence and overlap, window means)."""
    lambdas, counts, u = samples.lambdas, samples.counts, samples.u_kn
    n = int(counts.sum())
    evaluations = _dynamics_evaluations(samples.dynamics) + samples.evaluations
    common = {"n_samples": n, "n_energy_evaluations": evaluations, "wall_s": wall_s}
    result = mbar(u, counts)
    windows = [samples.window(k) for k in range(len(lambdas))]
    mean = np.array([samples.slope[w].mean() for w in windows])
    se = np.array([samples.slope[w].std(ddof=1) / np.sqrt(len(samples.slope[w])) for w in windows])
    ti = thermodynamic_integration(lambdas, mean, se, n)
    forward = [u[k + 1, windows[k]] - u[k, windows[k]] for k in range(len(lambdas) - 1)]
    reverse = [u[k, windows[k + 1]] - u[k + 1, windows[k + 1]] for k in range(len(lambdas) - 1)]
    bar, bar_steps, bar_errors = bar_chain(forward, reverse)
    solvated = windows[-1]
    fep = exponential_averaging(u[0, solvated] - u[-1, solvated])  # f(0) − f(1) from the λ = 1 samples
    records = {"mbar": free_energy_record(result.estimate, temperature, common, negate=True),
               "ti": free_energy_record(ti, temperature, common, negate=True),
               "bar": free_energy_record(bar, temperature, common, negate=True),
               "fep": free_energy_record(fep, temperature, {**common, "n_samples": int(counts[-1])}, negate=False)}
    diagnostics = {
        "lambdas": lambdas.tolist(), "samples_per_window": counts.tolist(),
        "statistical_inefficiency_frames": samples.g.tolist(), "equilibration_frames": samples.t0.tolist(),
        "recorded_frames_per_walker": samples.frames,
        "mean_du_dlambda_kT": mean.tolist(), "se_du_dlambda_kT": se.tolist(),
        "mbar_converged": result.converged, "mbar_residual_kT": result.residual,
        "mbar_f_k": result.f_k.tolist(), "mbar_df_k": result.df_k.tolist(),
        "overlap_matrix": result.overlap.tolist(),
        "neighbour_overlap": result.neighbours.tolist(),
        "poor_overlap": [list(pair) for pair in result.poor_overlap],
        "bar_steps_kT": bar_steps.tolist(), "bar_step_errors_kT": bar_errors.tolist(),
        "dynamics": samples.dynamics,
    }
    if not result.converged:
        log.warning("MBAR did not converge (largest residual %.3g kT)", result.residual)
    return records, diagnostics


def _dynamics_evaluations(d: dict) -> int:
    """Force evaluations of the window dynamics ``d`` (its results record): one per walker per time
    step, equilibration included."""
    steps = round((d["simulated_ns_per_walker"] * 1000.0 + d["equilibration_ps"]) * 1000.0 / d["timestep_fs"])
    return steps * d["walkers"]


def free_energy_record(estimate: Estimate, temperature: float, extra: dict, negate: bool) -> dict:
    """One estimator's entry of ``results.json``: ``dF_kT``, ``se_kT`` and the same in kJ/mol and kcal/mol.

    ``negate`` flips an f_last − f_first estimate into F(λ=0) − F(λ=1)."""
    kT = kt_kj_per_mol(temperature)
    value = -float(estimate.value) if negate else float(estimate.value)
    se = float(estimate.se)
    return {"dF_kT": value, "se_kT": se, "dF_kJ_mol": value * kT, "se_kJ_mol": se * kT,
            "dF_kcal_mol": value * kT / KJ_PER_KCAL, "se_kcal_mol": se * kT / KJ_PER_KCAL,
            "method": estimate.method, **extra}
