"""Time-conditioned networks and the preconditioned energy model U_θ(t, x) with free energies f."""
from boltzclf.models.energy import EnergyModel, FixedTimeEnergy
from boltzclf.models.networks import TimeConditionedMLP

__all__ = ["EnergyModel", "FixedTimeEnergy", "TimeConditionedMLP"]
