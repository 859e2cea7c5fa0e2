"""ΔF(φ > 0 vs φ < 0) of alanine dipeptide from two SMC walks, each confined to one side of φ.

The φ > 0 side holds 0.3 % of the Boltzmann mass, and an unconfined walk on a CPU-trained energy
keeps too few lineages for any to end there. Each walk here is confined at t = 0 to its side
(:class:`~boltzclf.sampling.paths.ConfinedPath` with
:class:`~boltzclf.evaluation.molecular_samples.PhiSide`), so log Ẑ₊ and log Ẑ₋ estimate the two
sides' normalisers and ΔF = −ln(Ẑ₊ / Ẑ₋) needs no particle to cross the divide.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from boltzclf.evaluation.molecular_samples import PhiSide, Reference, chirality
from boltzclf.pipelines.sampling import SampleConfig, SamplingProblem, draw

#: What the record of a confined SMC walk keeps per side of φ.
SIDE_KEYS = ("log_z", "log_z_se", "log_z_groups", "ess_final", "n_model_evals", "n_target_evals", "n_nonfinite")


def side_free_energy(problem: SamplingProblem, config: SampleConfig, seed: int) -> dict:
    """ΔF(φ > 0 vs φ < 0) [kT] from two SMC walks of ``config`` (an SMC config with MALA moves at every
    level) on ``problem``, one per side of φ (:func:`phi_free_energy`)."""
    native = float(chirality(torch.as_tensor(problem.system.positions, dtype=torch.float64)[None])[0])
    return phi_free_energy(lambda region, generator: draw(problem, config, generator, region=region)["diagnostics"],
                           native, seed)


def phi_free_energy(walk: Callable[[PhiSide, torch.Generator], dict], native_sign: float, seed: int) -> dict:
    """ΔF(φ > 0 vs φ < 0) = −ln(Ẑ₊ / Ẑ₋) [kT] from ``walk(region, generator)``, an SMC walk confined to
    ``region`` that returns at least the :data:`SIDE_KEYS` of its diagnostics, run once per side of φ
    (in the hand ``native_sign``) with independent seeds ``seed + 1`` and ``seed + 2``, so the
    standard errors add in quadrature.

    Returns ``dF_phi``, ``dF_phi_se``, per side (``phi_positive``, ``phi_negative``) the
    :data:`SIDE_KEYS` of its walk, and the summed ``wall_s``, ``n_model_evals``, ``n_target_evals``.
    """
    sides, started = {}, time.perf_counter()
    for offset, (name, side) in enumerate((("phi_positive", 1), ("phi_negative", -1))):
        diagnostics = walk(PhiSide(native_sign, side), torch.Generator().manual_seed(seed + 1 + offset))
        sides[name] = {key: diagnostics[key] for key in SIDE_KEYS}
    positive, negative = sides["phi_positive"], sides["phi_negative"]
    return {"dF_phi": negative["log_z"] - positive["log_z"],
            "dF_phi_se": math.hypot(positive["log_z_se"], negative["log_z_se"]),
            "wall_s": time.perf_counter() - started,
            **{key: sum(side[key] for side in sides.values()) for key in ("n_model_evals", "n_target_evals")},
            **sides}


def with_sides(record: dict, sides: dict, reference: Reference) -> dict:
    """An SMC record whose ΔF_φ is the confined walks' (the pooled particles' is kept as
    ``dF_phi_particles``), with their wall time and evaluations added to the record's. ``sides`` as
    :func:`side_free_energy` returns it, or as read back from JSON (non-finite values: None)."""
    value, se = sides["dF_phi"], sides["dF_phi_se"]  # None (JSON null) when a side's Ẑ is 0 or one group ran
    defined = value is not None and se is not None and math.isfinite(value) and math.isfinite(se)
    combined = math.hypot(se, reference.dF_phi_se) if defined else math.nan
    error = value - reference.dF_phi if defined else None
    return {**record, "dF_phi_particles": record["dF_phi"], "dF_phi_particles_se": record["dF_phi_se"],
            "dF_phi": value, "dF_phi_se": se, "dF_phi_error": error,
            "dF_phi_z": error / combined if defined and combined > 0 else None,
            "wall_s": record["wall_s"] + sides["wall_s"],
            "n_model_evals": record["n_model_evals"] + sides["n_model_evals"],
            "n_energy_evals": record["n_energy_evals"] + sides["n_target_evals"], "sides": sides}
