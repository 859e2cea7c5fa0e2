"""Native, batched, differentiable torch implementation of OpenMM force fields (no cutoff).

Importing this package registers the ``"torch"`` backend of :mod:`boltzclf.openmm.bridge`.
"""
from boltzclf.forcefield.field import TorchForceField
from boltzclf.forcefield.target import TorchBridge, TorchEnergyTarget, torch_target

__all__ = ["TorchBridge", "TorchEnergyTarget", "TorchForceField", "torch_target"]
