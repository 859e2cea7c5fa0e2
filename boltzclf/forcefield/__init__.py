"""Native, batched, differentiable torch implementation of OpenMM force fields (no cutoff)."""
from boltzclf.forcefield.field import TorchForceField

__all__ = ["TorchForceField"]
