"""Estimators: arrays in (CV values, reduced energies, log-weights), estimates with uncertainties out."""
