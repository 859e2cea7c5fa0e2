"""The value every estimator returns: an estimate with its standard error, effective sample size and method.

Kept in its own module so that every estimator (importance weights, TI, MBAR wrappers, metrics) returns
the same type and reports can serialise it the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from boltzclf.core.errors import BoltzclfError


class EstimatorInputError(BoltzclfError, ValueError):
    """Bad estimator input (NaN, wrong shape, wrong dtype); the message names the argument and the problem.

    It is a :class:`ValueError` for library callers and a :class:`BoltzclfError` for the CLI, which
    prints the message without a traceback.
    """


@dataclass(frozen=True, eq=False)
class Estimate:
    """An estimate with its uncertainty.

    Attributes
    ----------
    value
        The estimate, a float64 tensor of shape ``(...)`` (0-d for a single scalar estimate, ``(K,)``
        for K observables estimated from the same samples). Unit: that of the estimated quantity.
    se
        Standard error of ``value``, same shape and unit. NaN where it is undefined (e.g. one sample).
    n_eff
        Effective sample size (a count, not a fraction), float64, shape ``(...)`` of the batch (without
        the observable axis). How it is defined is stated in ``method``.
    method
        One line: the estimator and its error model.
    """

    value: torch.Tensor
    se: torch.Tensor
    n_eff: torch.Tensor
    method: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy: tensors become floats (0-d) or nested lists; NaN stays NaN."""
        return {"value": self.value.tolist(), "se": self.se.tolist(), "n_eff": self.n_eff.tolist(),
                "method": self.method}


#: Molar gas constant R = N_A k_B in kJ/(mol K) (CODATA 2018, exact), and the thermochemical calorie.
GAS_CONSTANT_KJ_PER_MOL_K = 8.31446261815324e-3
KJ_PER_KCAL = 4.184


def free_energy_units(estimate: Estimate, temperature: float) -> dict[str, Any]:
    """A free-energy estimate in kT, kJ/mol and kcal/mol, JSON-ready.

    Parameters
    ----------
    estimate
        An :class:`Estimate` whose ``value`` and ``se`` are in kT.
    temperature
        The temperature that defines kT, in K (> 0).

    Returns
    -------
    dict
        ``value_kT``, ``se_kT``, ``value_kJ_per_mol``, ``se_kJ_per_mol``, ``value_kcal_per_mol``,
        ``se_kcal_per_mol`` (floats or nested lists), ``temperature_K``, ``kT_kJ_per_mol``, ``n_eff``
        and ``method``; kT = R·T with R = 8.31446261815324e-3 kJ/(mol K), 1 kcal = 4.184 kJ.
    """
    if not temperature > 0:
        raise EstimatorInputError(f"temperature: expected a positive value in K, got {temperature!r}")
    kt = GAS_CONSTANT_KJ_PER_MOL_K * float(temperature)
    out: dict[str, Any] = {"temperature_K": float(temperature), "kT_kJ_per_mol": kt}
    for unit, scale in (("kT", 1.0), ("kJ_per_mol", kt), ("kcal_per_mol", kt / KJ_PER_KCAL)):
        out[f"value_{unit}"] = (estimate.value * scale).tolist()
        out[f"se_{unit}"] = (estimate.se * scale).tolist()
    out["n_eff"] = estimate.n_eff.tolist()
    out["method"] = estimate.method
    return out
