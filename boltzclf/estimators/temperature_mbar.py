"""MBAR reweighting across temperatures (replica exchange) to one target temperature, with pymbar.

Samples ``n`` drawn at temperatures T_k (``counts[k]`` of them, any order given by ``state``) with
potential energies U_n [kJ/mol] define reduced energies u_k(n) = U_n / (R T_k) in every state. MBAR
(Shirts & Chodera, J. Chem. Phys. 129, 124105 (2008)) solves for the dimensionless free energies f_k;
the pooled samples then carry, for a target temperature T*, the log-weights

    log w_n = −U_n / (R T*) − log Σ_k N_k exp(f_k − u_k(n))   (normalised to Σ w = 1),

so every frame of every temperature contributes to the T* estimate (consistent for any T* inside the
sampled range when the states overlap). The standard errors downstream treat these weights as
fixed: the uncertainty of the f_k is not propagated (small when the neighbouring states overlap well). The weights are for an *estimate*; its error bar must still
account for correlated frames (pass cluster ids, e.g. the replica-exchange column of each frame, to the
estimators in :mod:`boltzclf.estimators.populations` or :mod:`boltzclf.estimators.weighted`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from boltzclf.estimators.estimate import GAS_CONSTANT_KJ_PER_MOL_K, EstimatorInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TemperatureWeights:
    """Attributes: ``log_w`` ``(N,)`` normalised log-weights at the target temperature; ``f_k`` ``(R,)``
    dimensionless MBAR free energies (f_0 = 0); ``kish_ess`` of the weights (a count)."""

    log_w: np.ndarray
    f_k: np.ndarray
    kish_ess: float


def temperature_weights(potential_kj: np.ndarray, state: np.ndarray, temperatures: np.ndarray,
                        target_temperature: float) -> TemperatureWeights:
    """MBAR log-weights of pooled samples from several temperatures, for ``target_temperature``.

    Parameters
    ----------
    potential_kj
        ``(N,)`` potential energy of each sample [kJ/mol], finite.
    state
        ``(N,)`` int, index into ``temperatures`` of the temperature each sample was drawn at.
    temperatures
        ``(R,)`` K, each with at least one sample.
    target_temperature
        K.

    Returns
    -------
    TemperatureWeights
    """
    import pymbar  # imported here: it prints a banner on import

    u = np.asarray(potential_kj, dtype=np.float64).ravel()
    k = np.asarray(state).ravel()
    temps = np.asarray(temperatures, dtype=np.float64).ravel()
    if u.shape != k.shape or not np.isfinite(u).all():
        raise EstimatorInputError(f"potential_kj, state: need equal shapes and finite energies, got {u.shape}, {k.shape}")
    if not np.issubdtype(k.dtype, np.integer) or k.min() < 0 or k.max() >= len(temps):
        raise EstimatorInputError(f"state: expected integers in [0, {len(temps)})")
    counts = np.bincount(k, minlength=len(temps))
    if (counts == 0).any() or target_temperature <= 0 or (temps <= 0).any():
        raise EstimatorInputError(f"every temperature needs samples (counts {counts.tolist()}) and all "
                                  "temperatures must be positive")
    order = np.argsort(k, kind="stable")  # pymbar's convention: the samples of state 0 first, ...
    beta = 1.0 / (GAS_CONSTANT_KJ_PER_MOL_K * temps)
    u_kn = beta[:, None] * u[order][None, :]
    mbar = pymbar.MBAR(u_kn, counts)
    f_k = np.asarray(mbar.f_k)
    log_denominator = np.logaddexp.reduce(np.log(counts)[:, None] + f_k[:, None] - u_kn, axis=0)
    sorted_log_w = -u[order] / (GAS_CONSTANT_KJ_PER_MOL_K * target_temperature) - log_denominator
    log_w = np.empty_like(sorted_log_w)
    log_w[order] = sorted_log_w
    log_w -= np.logaddexp.reduce(log_w)
    w = np.exp(log_w)
    return TemperatureWeights(log_w=log_w, f_k=f_k - f_k[0], kish_ess=float(1.0 / np.sum(w * w)))
