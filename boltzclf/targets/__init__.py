"""Energy targets: the protocol every energy satisfies, and analytic targets with exact marginals."""
from boltzclf.targets.protocol import EnergyTarget

__all__ = ["EnergyTarget"]
