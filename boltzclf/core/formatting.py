"""Formatting of numbers that may be undefined (NaN and infinities are written to JSON as null)."""
from __future__ import annotations


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or "–" where it is None (undefined)."""
    return "–" if value is None else format(value, spec)
