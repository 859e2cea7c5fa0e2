"""The ``reference_ensemble`` workflow: a reference Boltzmann ensemble of a molecule, made and analysed.

One run of batched dynamics on the torch force field (:mod:`boltzclf.dynamics`; walkers × a
temperature ladder with replica exchange) into ``OUT/dynamics/`` (resumable), then the estimates a
learned energy is judged against, with error bars right for correlated frames: each replica-exchange
column is an independent chain and serves as one cluster of the error (:mod:`boltzclf.estimators.correlated`):

* ``analysis: aldp`` — ΔF(φ > 0 vs φ < 0) in kT, kJ/mol and kcal/mol, the C7eq / C5 / αR / αL
  populations (:mod:`boltzclf.estimators.populations`), and the φ/ψ free-energy surface;
* ``analysis: chignolin`` — the folded fraction from the Cα RMSD to the spec's native structure, and
  the RMSD profile.

``OUT/results.json`` holds the estimates, the dynamics' throughput and exchange statistics and the wall
time; ``OUT/cvs.npz`` the per-frame CVs ``(W, F)``; ``OUT/surface.npz`` the free-energy surface or
profile (kT, bin edges in rad or nm, bootstrap SE); ``OUT/report.png`` the surface or profile
(unsampled bins blank) with the headline numbers in its title. Under ``torchrun`` the dynamics share
their columns over the processes (:mod:`boltzclf.dynamics.engine`) and rank 0 alone analyses and
writes; the others return an empty mapping.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import mdtraj
import numpy as np
import torch

from boltzclf.core import atomic, distributed, rundir
from boltzclf.core.config import require, to_dict
from boltzclf.core.device import resolve_device
from boltzclf.core.errors import BoltzclfError
from boltzclf.dynamics.config import BatchedMDConfig
from boltzclf.dynamics.engine import check_supported, simulate_batched
from boltzclf.dynamics.output import load_frames
from boltzclf.estimators.estimate import free_energy_units
from boltzclf.estimators.pmf import histogram_free_energy
from boltzclf.estimators.populations import basin_populations, folded_fraction, phi_sign_free_energy
from boltzclf.estimators.temperature_mbar import temperature_weights
from boltzclf.openmm import load_system
from boltzclf.openmm.cvs import make_cv
from boltzclf.plots.reference import reference_figure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisOptions:
    """What to estimate: ``kind`` aldp (φ/ψ) or chignolin (Cα RMSD to native; folded below
    ``rmsd_threshold_nm``, default the package convention); ``bins`` per CV for the surface/profile.
    ``mbar`` (aldp; needs ``dynamics.save_all_temperatures``) adds ΔF and populations from the frames of
    every temperature, MBAR-reweighted to the target temperature (:mod:`~boltzclf.estimators.temperature_mbar`)."""

    kind: Literal["aldp", "chignolin"] = "aldp"
    bins: int = 36
    rmsd_threshold_nm: float | None = None
    mbar: bool = False

    def __post_init__(self):
        require(self.bins >= 4, "bins", "must be >= 4")
        require(self.rmsd_threshold_nm is None or self.rmsd_threshold_nm > 0, "rmsd_threshold_nm", "must be positive")


@dataclass(frozen=True)
class ReferenceEnsembleWorkflow:
    """A system spec (path, relative to the working directory), batched dynamics and an analysis."""

    workflow: Literal["reference_ensemble"]
    system: str
    dynamics: BatchedMDConfig
    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)
    description: str = ""

    def __post_init__(self):
        require(self.dynamics.walkers >= 2, "dynamics.walkers",
                "needs >= 2 columns: each column is one independent cluster of the error bars")
        require(not self.analysis.mbar or (self.dynamics.save_all_temperatures and self.dynamics.replicas > 1
                                           and self.analysis.kind == "aldp"),
                "analysis.mbar", "needs kind aldp, replicas > 1 and dynamics.save_all_temperatures: true")
        require(Path(self.system).is_file(), "system", f"{self.system}: file not found (paths are relative to "
                "the working directory)")


def run(workflow: ReferenceEnsembleWorkflow, out: str | Path, device: torch.device) -> dict:
    """Run (or resume) the workflow into ``out``; returns ``results.json``'s content.

    ``device`` is used when ``dynamics.device`` is ``auto``.
    """
    start = time.perf_counter()
    config = workflow.dynamics
    if config.device == "auto":
        config = BatchedMDConfig(**{**to_dict(config), "device": str(device)})
    system = load_system(workflow.system)
    if abs(system.temperature - config.temperature) > 1e-9:
        raise BoltzclfError(f"{workflow.system}: the spec's temperature {system.temperature:g} K differs from "
                            f"dynamics.temperature {config.temperature:g} K; the analysis reports at the spec's "
                            "temperature, so make them equal")
    resolve_device(config.device)  # refuse before the run directory exists, so a corrected retry can use it
    check_supported(system)
    resolved = {"command": "simulate", "engine": "torch", "system": to_dict(system.spec), "md": to_dict(config)}
    schema = {"system": type(system.spec), "md": type(config)}

    def prepare() -> tuple[Path, Path]:
        top = rundir.prepare(out, to_dict(workflow), schema=type(workflow), seed=config.seed, device=str(device),
                             inputs=[workflow.system])
        return top, rundir.prepare(top / "dynamics", resolved, schema=schema, seed=config.seed, device=config.device,
                                   inputs=[workflow.system])

    out, dynamics_dir = distributed.on_main(prepare)
    dynamics = simulate_batched(system, config, dynamics_dir)
    return distributed.on_main(lambda: _analyse(workflow, system, dynamics, dynamics_dir, out, start),
                               share=False) or {}


def _analyse(workflow: ReferenceEnsembleWorkflow, system, dynamics: dict, dynamics_dir: Path, out: Path,
             start: float) -> dict:
    """The estimates of a finished dynamics run, written into ``out``; returns ``results.json``'s content."""
    frames = load_frames(dynamics_dir).transpose(1, 0, 2, 3)  # (W, F, N, 3): each column in time order
    analyse = _aldp if workflow.analysis.kind == "aldp" else _chignolin
    results, figure = analyse(system, frames, workflow.analysis, out)
    if workflow.analysis.mbar:
        results["mbar_all_temperatures"] = _aldp_mbar(system, dynamics_dir, frames)
    results["dynamics"] = {key: dynamics[key] for key in (
        "walkers", "replicas", "processes", "n_frames", "simulated_ns_per_walker", "stride_ps", "wall_s",
        "aggregate_ns_per_day", "device", "n_nonfinite", "stopped_walkers", "memory") if key in dynamics}
    if "replica_exchange" in dynamics:
        results["dynamics"]["replica_exchange"] = dynamics["replica_exchange"]
    results["frames_at_target_temperature"] = int(frames.shape[0] * frames.shape[1])
    results["wall_s_total"] = time.perf_counter() - start  # of this invocation (a resumed run: the rest)
    atomic.save_figure(out / "report.png", figure)
    plt.close(figure)
    atomic.write_json(out / "results.json", results)  # last: it marks a finished run (to reuse)
    return results


def _cv_values(system, frames: np.ndarray, name: str) -> np.ndarray:
    """A named CV (:func:`boltzclf.openmm.cvs.make_cv`) of ``frames`` ``(W, F, N, 3)`` -> ``(W, F)``."""
    cv = make_cv(name, system.mdtraj_topology, system.positions)
    flat = torch.from_numpy(frames.reshape(-1, *frames.shape[2:]).astype(np.float64))
    with torch.no_grad():
        return cv(flat).numpy().reshape(frames.shape[:2])


def _aldp(system, frames: np.ndarray, options: AnalysisOptions, out: Path):
    phi, psi = _cv_values(system, frames, "phi"), _cv_values(system, frames, "psi")
    atomic.save_npz(out / "cvs.npz", phi=phi, psi=psi)
    # whole columns as the error's clusters: they are exactly independent, while the slot-0 series of
    # one column stays correlated over longer than a fitted autocorrelation time suggests (a rare
    # basin's configurations travel up and down the ladder and come back)
    delta_f = phi_sign_free_energy(phi, block_length=phi.shape[1])
    populations = basin_populations(phi, psi, block_length=phi.shape[1])
    surface = histogram_free_energy(np.column_stack([phi.ravel(), psi.ravel()]), [(-np.pi, np.pi)] * 2,
                                    bins=options.bins, periodic=True, n_blocks=min(20, phi.shape[0]))
    results = {
        "system": system.spec.name, "temperature_K": system.temperature,
        "delta_f_phi_positive_vs_negative": free_energy_units(delta_f, system.temperature),
        **populations.as_dict(),
        "surface": {"file": "surface.npz", "method": surface.method, "n_samples": surface.n_samples},
    }
    atomic.save_npz(out / "surface.npz", edges_phi=surface.edges[0], edges_psi=surface.edges[1],
                    free_energy_kT=surface.free_energy, stderr_kT=surface.stderr)
    title = (f"{system.spec.name}, {system.temperature:g} K: ΔF(φ>0 vs φ<0) = {float(delta_f.value):.2f} ± "
             f"{float(delta_f.se):.2f} kT")
    return results, reference_figure(surface, "phi / deg", "psi / deg", title, populations)


def _aldp_mbar(system, dynamics_dir: Path, frames: np.ndarray) -> dict:
    """ΔF and populations from every slot's frames, MBAR-weighted to the target temperature; the
    replica-exchange column of a frame is its cluster (columns are independent, slots within one are not)."""
    energies = np.load(dynamics_dir / "energies.npz")
    potential, temperatures = energies["potential_energy"], energies["temperatures_K"]  # (F, R, W), (R,)
    n_frames, n_replicas, n_walkers = potential.shape
    slots = [frames.transpose(1, 0, 2, 3)]  # slot 0 as (F, W, N, 3)
    for slot in range(1, n_replicas):
        traj = mdtraj.load(str(dynamics_dir / "slots" / f"slot_{slot:02d}.dcd"), top=str(dynamics_dir / "topology.pdb"))
        slots.append(traj.xyz.reshape(n_frames, n_walkers, *traj.xyz.shape[1:]))
    pooled = np.stack(slots, axis=1)  # (F, R, W, N, 3), the layout of potential
    flat = pooled.reshape(-1, 1, *pooled.shape[3:])
    phi, psi = (_cv_values(system, flat, name).ravel() for name in ("phi", "psi"))
    state = np.broadcast_to(np.arange(n_replicas)[None, :, None], potential.shape).ravel()
    column = np.broadcast_to(np.arange(n_walkers)[None, None, :], potential.shape).ravel()
    weights = temperature_weights(potential.ravel(), state, temperatures, system.temperature)
    delta_f = phi_sign_free_energy(phi, weights.log_w, clusters=column)
    populations = basin_populations(phi, psi, weights.log_w, clusters=column)
    return {"delta_f_phi_positive_vs_negative": free_energy_units(delta_f, system.temperature),
            **populations.as_dict(), "kish_ess": weights.kish_ess, "mbar_f_k": weights.f_k.tolist(),
            "frames": int(phi.size), "clusters": "replica-exchange columns"}


def _chignolin(system, frames: np.ndarray, options: AnalysisOptions, out: Path):
    native = mdtraj.Trajectory(system.positions, system.mdtraj_topology)
    ca = system.mdtraj_topology.select("name CA")
    traj = mdtraj.Trajectory(frames.reshape(-1, *frames.shape[2:]), system.mdtraj_topology)
    rmsd = mdtraj.rmsd(traj, native, atom_indices=ca).reshape(frames.shape[:2])
    atomic.save_npz(out / "cvs.npz", ca_rmsd_nm=rmsd)
    folded = folded_fraction(rmsd, "rmsd", options.rmsd_threshold_nm, block_length=rmsd.shape[1])
    upper = max(float(rmsd.max()), 0.5)
    profile = histogram_free_energy(rmsd.ravel(), [(0.0, np.nextafter(upper, np.inf))], bins=options.bins,
                                    n_blocks=min(20, rmsd.shape[0]))
    results = {"system": system.spec.name, "temperature_K": system.temperature,
               "folded_fraction": folded.as_dict(),
               "rmsd_profile": {"file": "surface.npz", "method": profile.method, "n_samples": profile.n_samples}}
    atomic.save_npz(out / "surface.npz", edges_rmsd=profile.edges[0], free_energy_kT=profile.free_energy,
                    stderr_kT=profile.stderr)
    title = (f"{system.spec.name}, {system.temperature:g} K: folded {float(folded.value):.3f} ± "
             f"{float(folded.se):.3f} ({folded.method.split(';')[0]})")
    return results, reference_figure(profile, "Cα RMSD to native / nm", None, title)
