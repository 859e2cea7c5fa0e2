"""Evaluation of learned energies against targets with exact noised marginals."""
