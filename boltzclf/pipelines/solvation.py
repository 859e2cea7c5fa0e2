"""The ``solvation`` workflow: a molecule's solvation free energy along named λ paths, by classical
λ-window estimators and by learned TI along an interpolant, side by side.

For each path in ``windows`` (``gb_charges``: λ scales the GB charges, the surface-area term stays on;
``full_gb``: λ scales the whole GB energy, λ = 0 is vacuum; see :mod:`boltzclf.forcefield.solvation`):

1. ``OUT/<path>/dynamics``: every λ window sampled by batched Langevin dynamics on the torch force
   field (:mod:`boltzclf.pipelines.solvation_windows`); MBAR, TI, BAR and one-sided EXP (``fep``, from
   the solvated end) with errors, the overlap matrix and ⟨∂u/∂λ⟩.
2. ``OUT/<path>/learned/<method>``: an interpolant energy trained on the path's two end windows, its
   TI estimate and, where configured, SMC along it between the true ends
   (:mod:`boltzclf.pipelines.solvation_learned`), one per loss (DSM, DSM + DiffCLF).

``results.json`` holds, per path and estimator, ``dF_kT`` = F(vacuum end) − F(solvated end) (positive
when solvation is favourable), ``se_kT``, the same in kJ/mol and kcal/mol, samples and energy
evaluations used and ``wall_s``; plus diagnostics. ``report.png`` and ``report.md`` summarise it.
Every stage resumes when the command is run again. Under ``torchrun`` the window dynamics share their
walkers over the processes and every process trains (DDP); rank 0 alone estimates and writes, and
the others return an empty mapping.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import torch

from boltzclf.core import atomic, distributed, rundir
from boltzclf.core.config import require, to_dict
from boltzclf.core.errors import BoltzclfError
from boltzclf.core.formatting import fmt
from boltzclf.dynamics.config import BatchedMDConfig
from boltzclf.dynamics.engine import check_supported
from boltzclf.forcefield.field import GB_PATHS
from boltzclf.forcefield.solvation import lambda_problem, solvation_field
from boltzclf.openmm.system import load_system
from boltzclf.pipelines.solvation_learned import LearnedOptions, end_ensembles, learned_estimates
from boltzclf.pipelines.solvation_windows import classical_estimates, collect_windows, window_dynamics
from boltzclf.plots.solvation import solvation_report

log = logging.getLogger(__name__)

#: What each path's end states are, written into every output.
PATH_MEANING = {
    "gb_charges": "λ scales the GB-force charges; λ = 0 keeps the surface-area (nonpolar) term: "
                  "vacuum plus a cavity term (FEAT's and the DiffCLF paper's definition)",
    "full_gb": "λ scales the whole GB energy (polar + surface area); λ = 0 is the true vacuum system",
}


@dataclass(frozen=True)
class SolvationWorkflow:
    """See the module docstring. ``windows`` maps each path to its λ values (both ends included);
    ``dynamics`` is the sampling of every window (``walkers`` per window); ``learned`` the learned
    estimators (omit for the classical reference alone)."""

    workflow: Literal["solvation"]
    system: str
    windows: dict[str, tuple[float, ...]]
    dynamics: BatchedMDConfig
    learned: LearnedOptions | None = None
    description: str = ""

    def __post_init__(self):
        require(len(self.windows) > 0, "windows", f"name at least one path ({', '.join(GB_PATHS)})")
        for path, lambdas in self.windows.items():
            require(path in GB_PATHS, f"windows.{path}", f"is not a solvation path (choose from {', '.join(GB_PATHS)})")
            problem = lambda_problem(lambdas)
            require(problem is None, f"windows.{path}", problem or "")
        require(self.learned is None or self.learned.experiment.data.system == self.system,
                "learned.experiment.data.system", "must be the workflow's system")


def run(workflow: SolvationWorkflow, out: str | Path, device: torch.device) -> dict:
    """Run (or resume) the workflow into ``out``; returns ``results.json``'s content."""
    system = load_system(workflow.system)
    if workflow.dynamics.temperature != system.temperature:
        raise BoltzclfError(f"dynamics.temperature: {workflow.dynamics.temperature} K differs from "
                            f"{system.spec.name}'s {system.temperature} K")
    check_supported(system)  # refuse constraints and systems without a path before anything is written
    for path in workflow.windows:
        solvation_field(system, path)
    out = distributed.on_main(lambda: rundir.prepare(out, to_dict(workflow), seed=workflow.dynamics.seed,
                                                     schema=type(workflow), device=str(device),
                                                     inputs=(workflow.system,)))
    results: dict = {"system": system.spec.name, "temperature_K": system.temperature,
                     "dF_definition": "F(λ = 0, vacuum end) − F(λ = 1, solvated end) = −ΔG_solv",
                     "sampler": "batched BAOAB Langevin on the torch force field, all windows in one tensor"}
    diagnostics = {}
    for path, values in workflow.windows.items():
        lambdas = np.asarray(values, dtype=np.float64)
        dynamics_dir = out / path / "dynamics"
        window_dynamics(system, path, lambdas, workflow.dynamics, dynamics_dir, device)
        classical = distributed.on_main(lambda: _classical(system, path, lambdas, workflow, dynamics_dir), share=False)
        records, diagnostics[path], samples = classical if classical is not None else ({}, None, None)
        if workflow.learned is not None:  # every process trains on the same end ensembles
            ends = distributed.on_main(lambda: end_ensembles(samples, workflow.dynamics.walkers,
                                                             workflow.learned.held_out))
            records.update(learned_estimates(workflow.learned, system, path, ends, out / path / "learned", device))
        results[path] = {"meaning": PATH_MEANING[path], **records}
    results["diagnostics"] = diagnostics
    return distributed.on_main(lambda: _report(workflow, system, results, out), share=False) or {}


def _classical(system, path: str, lambdas: np.ndarray, workflow: SolvationWorkflow, dynamics_dir: Path):
    """The classical estimates of one path's finished window dynamics: (records, diagnostics, samples)."""
    started = time.perf_counter()  # the dynamics' own wall time is in its record (also when reused)
    samples = collect_windows(system, path, lambdas, workflow.dynamics.walkers, dynamics_dir)
    wall = samples.dynamics.get("wall_s", 0.0) + time.perf_counter() - started
    records, diagnostics = classical_estimates(samples, system.temperature, wall)
    return records, diagnostics, samples


def _report(workflow: SolvationWorkflow, system, results: dict, out: Path) -> dict:
    atomic.write_json(out / "results.json", results)
    atomic.write_text(out / "report.md", markdown_report(results, workflow))
    figure = solvation_report(results, title=workflow.description or f"{system.spec.name}: solvation free energy")
    atomic.save_figure(out / "report.png", figure)
    plt.close(figure)
    return results


def markdown_report(results: dict, workflow: SolvationWorkflow) -> str:
    """A Markdown summary table: one row per path and estimator."""
    lines = [f"# {workflow.description or results['system']}", "",
             f"ΔF = {results['dF_definition']}, at {results['temperature_K']:g} K.", ""]
    for path in workflow.windows:
        record = results[path]
        diag = results["diagnostics"][path]
        lines += [f"## {path}", "", record["meaning"] + ".", "",
                  "| estimator | ΔF / kT | SE / kT | ΔF / kJ mol⁻¹ | ΔF / kcal mol⁻¹ | samples | energy evaluations | wall / s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, entry in record.items():
            if isinstance(entry, dict):
                lines.append(f"| {name} | {fmt(entry['dF_kT'], '.3f')} | {fmt(entry['se_kT'], '.3f')} | "
                             f"{fmt(entry['dF_kJ_mol'], '.2f')} | {fmt(entry['dF_kcal_mol'], '.2f')} | "
                             f"{entry['n_samples']:,} | {entry['n_energy_evaluations']:,} | "
                             f"{fmt(entry.get('wall_s'), '.0f')} |")
        poor = diag["poor_overlap"]
        lines += ["", f"MBAR converged: {diag['mbar_converged']} (residual {diag['mbar_residual_kT']:.2g} kT); "
                      f"smallest neighbour overlap {min(diag['neighbour_overlap']):.3f}"
                      + (f"; poorly overlapping windows: {poor}" if poor else "") + ".", ""]
    return "\n".join(lines)
