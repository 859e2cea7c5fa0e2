"""Native, batched, differentiable torch implementation of OpenMM force fields (no cutoff)."""
from boltzclf.forcefield.field import TorchForceField
from boltzclf.forcefield.target import TorchBridge, TorchEnergyTarget, torch_bridge, torch_target

__all__ = ["TorchBridge", "TorchEnergyTarget", "TorchForceField", "torch_bridge", "torch_target"]
