"""boltzclf: learned time-dependent energies of Boltzmann densities.

Energies U_θ(t, x) are trained with denoising score matching plus the Diffusive Classification
(DiffCLF) loss, then used for reweighting, SMC, Langevin dynamics, PMFs and free energies.
"""
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
