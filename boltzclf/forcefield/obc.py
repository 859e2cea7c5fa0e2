"""OpenMM's native GBSAOBCForce restated as an equivalent CustomGBForce.

The native force implements OBC2 (α, β, γ = 1, 0.8, 4.85) with a dielectric offset of 0.009 nm and
the ACE surface-area term ``4π·E_SA·(R + 0.14)²·(R/B)⁶``. Rather than a second GB code path, the
force is rewritten as a :class:`openmm.CustomGBForce` with the same physics and then evaluated by
:class:`boltzclf.forcefield.customgb.CustomGB`. One detail differs from the CustomGBForce that
openmm.app builds: the native kernel adds ``2(1/ρ_i − 1/L)`` to the pair integral when atom ``i``
lies entirely inside the scaled sphere of atom ``j`` (``ρ_i < s_j − r``); the restatement keeps it.
"""
from __future__ import annotations

import math

import openmm

from boltzclf.core.errors import BoltzclfError
from boltzclf.forcefield.nonbonded import ONE_4PI_EPS0

DIELECTRIC_OFFSET = 0.009  # nm
PROBE_RADIUS = 0.14  # nm

_INTEGRAL = (
    "select(step(r+sr2-or1), 0.5*(1/L-1/U+0.25*(r-sr2^2/r)*(1/(U^2)-1/(L^2))+0.5*log(L/U)/r"
    " + 2*(1/or1-1/L)*step(sr2-r-or1)), 0);"
    "U=r+sr2; L=max(or1, D); D=abs(r-sr2)"
)
_BORN_RADIUS = "1/(1/or-tanh(psi-0.8*psi^2+4.85*psi^3)/radius); psi=I*or; radius=or+{offset}"
_SELF = "{prefactor}*charge^2/B"
_SURFACE = "{sa}*(radius+{probe})^2*(radius/B)^6; radius=or+{offset}"
_PAIR = "{prefactor2}*charge1*charge2/f; f=sqrt(r^2+B1*B2*exp(-r^2/(4*B1*B2)))"


def obc_as_custom_gb(force: openmm.GBSAOBCForce, label: str = "GBSAOBCForce") -> openmm.CustomGBForce:
    """An in-memory :class:`openmm.CustomGBForce` with the energy of ``force``.

    Per-particle parameters are ``charge`` (e), ``or`` (offset radius, nm) and ``sr`` (scaled offset
    radius, nm), as in openmm.app's GB forces, so λ scaling treats both the same way.

    Raises
    ------
    BoltzclfError
        If ``force`` uses a cutoff.
    """
    if force.getNonbondedMethod() != openmm.GBSAOBCForce.NoCutoff:
        raise BoltzclfError(f"{label}: only NoCutoff is supported by the torch force field "
                            f"(got nonbonded method {force.getNonbondedMethod()})")
    solute, solvent = force.getSoluteDielectric(), force.getSolventDielectric()
    prefactor = -ONE_4PI_EPS0 * (1 / solute - 1 / solvent)
    surface_energy = force.getSurfaceAreaEnergy().value_in_unit(
        openmm.unit.kilojoule_per_mole / openmm.unit.nanometer**2)
    custom = openmm.CustomGBForce()
    custom.setNonbondedMethod(openmm.CustomGBForce.NoCutoff)
    for name in ("charge", "or", "sr"):
        custom.addPerParticleParameter(name)
    custom.addComputedValue("I", _INTEGRAL, openmm.CustomGBForce.ParticlePairNoExclusions)
    custom.addComputedValue("B", _BORN_RADIUS.format(offset=DIELECTRIC_OFFSET),
                            openmm.CustomGBForce.SingleParticle)
    custom.addEnergyTerm(_SELF.format(prefactor=0.5 * prefactor), openmm.CustomGBForce.SingleParticle)
    if surface_energy != 0:
        custom.addEnergyTerm(_SURFACE.format(sa=4 * math.pi * surface_energy, probe=PROBE_RADIUS,
                                             offset=DIELECTRIC_OFFSET), openmm.CustomGBForce.SingleParticle)
    custom.addEnergyTerm(_PAIR.format(prefactor2=prefactor), openmm.CustomGBForce.ParticlePairNoExclusions)
    for i in range(force.getNumParticles()):
        charge, radius, scale = force.getParticleParameters(i)
        offset_radius = radius.value_in_unit(openmm.unit.nanometer) - DIELECTRIC_OFFSET
        custom.addParticle([charge.value_in_unit(openmm.unit.elementary_charge), offset_radius,
                            scale * offset_radius])
    return custom
