"""Noising processes (VP, EDM, stochastic interpolants) and the fixed level grids they are trained on."""
from boltzclf.diffusion.grids import arcsine_grid, karras_grid, log_snr_grid, uniform_grid
from boltzclf.diffusion.interpolant import StochasticInterpolant
from boltzclf.diffusion.processes import EDM, LinearDiffusion, VariancePreserving

__all__ = [
    "EDM",
    "LinearDiffusion",
    "StochasticInterpolant",
    "VariancePreserving",
    "arcsine_grid",
    "karras_grid",
    "log_snr_grid",
    "uniform_grid",
]
