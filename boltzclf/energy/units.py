"""Thermal energy: the one place the gas constant lives."""
from __future__ import annotations

#: Molar gas constant R in kJ/(mol K) (CODATA 2018, the value ``openmm.unit.MOLAR_GAS_CONSTANT_R`` holds).
MOLAR_GAS_CONSTANT = 0.00831446261815324


def kt_kj_per_mol(temperature: float) -> float:
    """kT in kJ/mol at ``temperature`` K."""
    return MOLAR_GAS_CONSTANT * temperature
