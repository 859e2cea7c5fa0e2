"""OpenMM layer: system specs, builders, the batched energy bridge, MD data generation and CVs."""
from boltzclf.openmm.system import MolecularSystem, load_system

__all__ = ["MolecularSystem", "load_system"]
