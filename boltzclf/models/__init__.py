"""Time-conditioned networks and the preconditioned energy model U_θ(t, x) with free energies f."""
from boltzclf.models.egnn import EGNN
from boltzclf.models.energy import EnergyModel, FixedTimeEnergy
from boltzclf.models.networks import TimeConditionedMLP

__all__ = ["EGNN", "EnergyModel", "FixedTimeEnergy", "TimeConditionedMLP"]
