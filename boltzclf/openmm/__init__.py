"""OpenMM layer: system specs, builders, the batched energy bridge, MD data generation and CVs.

``load_system`` and ``MolecularSystem`` are imported lazily so that bridge worker processes, which
import :mod:`boltzclf.openmm.pool`, start without importing torch or mdtraj.
"""
from __future__ import annotations

__all__ = ["MolecularSystem", "load_system"]


def __getattr__(name: str):
    if name in __all__:
        from boltzclf.openmm import system

        return getattr(system, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
