"""Validate the torch force field against OpenMM on a user's own molecule.

:func:`validate` compares total and per-force energies and forces of the torch force field with an
OpenMM Context on the same configurations (accuracy against a double-precision platform, by default
``Reference``) and times both backends under equal conditions: torch as one batched call on the
path simulations use by default (compiled, float32), OpenMM as a single-Context Python loop (the
usual bridge baseline) with as many threads as torch uses or with one, whichever is faster.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import openmm
import openmm.unit as unit
import torch
from tqdm.auto import tqdm

from boltzclf.forcefield.field import TorchForceField
from boltzclf.openmm.pool import ContextEvaluator, make_context

log = logging.getLogger(__name__)


def perturbed_configurations(positions: np.ndarray, n: int, sigma: float,
                             rng: np.random.Generator) -> np.ndarray:
    """``n`` configurations ``(n, N, 3)`` nm: ``positions`` plus isotropic Gaussian noise of ``sigma`` nm."""
    return positions[None] + sigma * rng.standard_normal((n, *positions.shape))


def openmm_force_energies(system: openmm.System, x: np.ndarray, platform: str,
                          progress: bool = False) -> np.ndarray:
    """Energy of every force of ``system``, ``(B, n_forces)`` kJ/mol, each force in its own group."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for index, force in enumerate(system.getForces()):
        force.setForceGroup(index)
    context = make_context(system, platform)
    energies = np.empty((len(x), system.getNumForces()))
    for b, positions in enumerate(tqdm(x, desc="OpenMM per-force", disable=not progress)):
        context.setPositions(positions)
        for index in range(system.getNumForces()):
            state = context.getState(getEnergy=True, groups={index})
            energies[b, index] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return energies


def _relative(value: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``|value - reference| / |reference|`` (inf where the reference is 0 and the value is not)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        error = np.abs(value - reference) / np.abs(reference)
    return np.where(value == reference, 0.0, error)


def _timed(evaluate, x, repeats: int) -> float:
    """Evaluations per second of ``evaluate(x)`` (best of ``repeats``)."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate(x)
        best = min(best, time.perf_counter() - start)
    return len(x) / best


def compare(field: TorchForceField, system: openmm.System, x: np.ndarray, device: torch.device,
            reference_platform: str = "Reference", progress: bool = False) -> dict:
    """Accuracy of the torch force field (float64 on ``device``) against OpenMM on ``x`` ``(B, N, 3)`` nm.

    Returns a JSON-ready mapping: ``n``, ``max_rel_energy_error``, ``max_force_error`` (kJ/mol/nm),
    ``max_rel_force_error`` (relative to each configuration's largest force component),
    ``per_force_max_rel_error`` and the number of non-finite energies on either side.
    """
    energy, force = field.energy_and_force(torch.as_tensor(x, dtype=torch.float64, device=device))
    energy, force = energy.cpu().numpy(), force.cpu().numpy()
    ref_energy, ref_force = ContextEvaluator(system, reference_platform).evaluate(x)
    per_force = openmm_force_energies(system, x, reference_platform, progress)
    with torch.no_grad():
        torch_per_force = field.force_energies(torch.as_tensor(x, dtype=torch.float64, device=device))
    finite = np.isfinite(energy) & np.isfinite(ref_energy)
    force_scale = np.abs(ref_force).reshape(len(x), -1).max(axis=1)
    force_error = np.abs(force - ref_force).reshape(len(x), -1).max(axis=1)
    return {
        "n": int(len(x)),
        "nonfinite_torch": int((~np.isfinite(energy)).sum()),
        "nonfinite_openmm": int((~np.isfinite(ref_energy)).sum()),
        "max_rel_energy_error": float(_relative(energy, ref_energy)[finite].max(initial=0.0)),
        "max_force_error": float(force_error[finite].max(initial=0.0)),
        "max_rel_force_error": float((force_error / force_scale)[finite].max(initial=0.0)),
        "per_force_max_rel_error": {
            label: float(_relative(value.detach().cpu().numpy(), per_force[:, int(label.split(":")[0])])
                         [finite].max(initial=0.0))
            for label, value in torch_per_force.items()},
    }


def throughput(field: TorchForceField, system: openmm.System, x: np.ndarray, device: torch.device,
               dtype: torch.dtype = torch.float32, platform: str = "CPU", compiled: bool = True,
               repeats: int = 3) -> dict:
    """Energy+force evaluations/s of one batched torch call on ``x`` and of the OpenMM baseline.

    The baseline is a single-Context loop on ``platform``; on ``CPU`` it is timed with one thread and
    with as many as torch uses, and the faster counts, so that neither side gets more cores.
    """
    positions = torch.as_tensor(x, dtype=dtype, device=device)

    def torch_call(batch: torch.Tensor) -> None:
        field.energy_and_force(batch, compiled=compiled)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch_call(positions)  # warm-up (and compilation)
    torch_rate = _timed(torch_call, positions, repeats)
    thread_counts = sorted({1, torch.get_num_threads()}) if platform == "CPU" else [1]
    openmm_rates = {}
    for threads in thread_counts:
        loop = ContextEvaluator(system, platform, threads)
        loop.evaluate(x[:2])
        openmm_rates[threads] = _timed(loop.evaluate, x, repeats)
    best_threads = max(openmm_rates, key=openmm_rates.get)
    return {"openmm_evals_per_s": openmm_rates[best_threads], "torch_evals_per_s": torch_rate,
            "speedup": torch_rate / openmm_rates[best_threads], "openmm_platform": platform,
            "openmm_threads": best_threads,
            "openmm_evals_per_s_by_threads": {str(k): v for k, v in openmm_rates.items()},
            "torch_device": str(device), "torch_dtype": str(dtype).split(".")[-1],
            "torch_threads": torch.get_num_threads(), "torch_compiled": compiled, "batch": int(len(x)),
            "timed": describe_timing(device, dtype, compiled, len(x), platform, best_threads)}


def describe_timing(device: torch.device, dtype: torch.dtype, compiled: bool, batch: int, platform: str,
                    openmm_threads: int) -> str:
    """One line saying which paths were timed, for results and printouts."""
    path = "compiled" if compiled else "eager"
    return (f"torch {path} {str(dtype).split('.')[-1]} on {device} ({torch.get_num_threads()} threads), one "
            f"call on {batch} configurations, vs an OpenMM single-Context loop on {platform} "
            f"({openmm_threads} thread{'s' if openmm_threads > 1 else ''}, the faster setting)")


def validate(system: openmm.System, sets: dict[str, np.ndarray], device: torch.device,
             reference_platform: str = "Reference", timing_platform: str = "CPU",
             compiled: bool = True, timing_dtype: torch.dtype = torch.float32, timing_batch: int = 1024,
             progress: bool = False) -> dict:
    """Accuracy on every named configuration set and throughput on their union.

    Parameters
    ----------
    system
        The OpenMM system.
    sets
        Name → configurations ``(B, N, 3)`` nm, e.g. ``{"perturbed": ..., "md": ...}``.
    device
        Torch device of the torch backend.
    reference_platform, timing_platform
        OpenMM platforms for the accuracy reference and for the timed single-Context loop.
    compiled, timing_dtype
        How the torch backend is timed (accuracy is always checked eagerly in float64).
    timing_batch
        Configurations in the timed batch: the sets' configurations, repeated as needed.

    Returns
    -------
    dict
        Worst-case errors over all sets at the top level (``max_rel_energy_error``,
        ``max_force_error``, ``max_rel_force_error``), one entry per set, and the throughput keys
        of :func:`throughput`.
    """
    field = TorchForceField(system).to(device)
    per_set = {name: compare(field, system, x, device, reference_platform, progress) for name, x in sets.items()}
    union = np.concatenate(list(sets.values()))
    timed = np.resize(union, (timing_batch, *union.shape[1:]))  # cycles through the configurations
    results = {key: max(entry[key] for entry in per_set.values())
               for key in ("max_rel_energy_error", "max_force_error", "max_rel_force_error")}
    results.update(throughput(field, system, timed, device, timing_dtype, timing_platform, compiled=compiled))
    results["reference_platform"] = reference_platform
    results["sets"] = per_set
    log.info("max relative energy error %.2e, max force error %.2e kJ/mol/nm, speedup %.1fx",
             results["max_rel_energy_error"], results["max_force_error"], results["speedup"])
    return results
