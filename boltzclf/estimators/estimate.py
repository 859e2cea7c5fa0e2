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
