"""Formatting of numbers that may be undefined (NaN and infinities are written to JSON as null)."""
from __future__ import annotations

import math


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or "–" where it is undefined (None, NaN, ±inf)."""
    return "–" if value is None or not math.isfinite(value) else format(value, spec)
