"""The two solvation paths (gb_charges, full_gb): end-state energies against separately built OpenMM
systems, ∂u/∂λ against finite differences, and refusal of systems and λ grids that define no path."""
from __future__ import annotations

import copy
import re

import numpy as np
import openmm
import pytest
import torch

from boltzclf.core.errors import BoltzclfError
from boltzclf.forcefield.solvation import du_dlambda, lambda_problem, reduced_energies, solvation_field
from boltzclf.energy.units import kt_kj_per_mol
from boltzclf.openmm.system import load_system
from forcefield_testdata import openmm_reference, perturbed
from test_torchff_gb_scale import scaled_gb_system

T = 300.0


def without_gb(system: openmm.System) -> openmm.System:
    """A copy of ``system`` with its GB forces removed: the true vacuum end state."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for index in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(index), (openmm.GBSAOBCForce, openmm.CustomGBForce)):
            system.removeForce(index)
    return system


@pytest.fixture(scope="module")
def aldp():
    return load_system("systems/alanine_dipeptide_implicit.yaml")


@pytest.fixture(scope="module")
def frames(aldp_implicit):
    return perturbed(aldp_implicit, 6, 0.01, seed=11)


def _openmm_kT(system: openmm.System, xs: np.ndarray) -> np.ndarray:
    return openmm_reference(system, xs)["total"] / kt_kj_per_mol(T)


@pytest.mark.parametrize("path", ["gb_charges", "full_gb"])
def test_end_states_match_separately_built_openmm_systems(aldp, frames, path):
    field = solvation_field(aldp, path)
    u = reduced_energies(field, torch.tensor(frames), [0.0, 1.0], T).numpy()
    vacuum_end = scaled_gb_system(aldp.system, 0.0) if path == "gb_charges" else without_gb(aldp.system)
    np.testing.assert_allclose(u[0], _openmm_kT(vacuum_end, frames), rtol=1e-6)
    np.testing.assert_allclose(u[1], _openmm_kT(aldp.system, frames), rtol=1e-6)


def test_the_two_vacuum_ends_differ_by_the_surface_area_term(aldp, frames):
    x = torch.tensor(frames)
    charges_off = reduced_energies(solvation_field(aldp, "gb_charges"), x, [0.0], T)[0]
    true_vacuum = reduced_energies(solvation_field(aldp, "full_gb"), x, [0.0], T)[0]
    # the GB force with zero charges is its surface-area (ACE) term alone: a positive energy
    surface = _openmm_kT(scaled_gb_system(aldp.system, 0.0), frames) - _openmm_kT(without_gb(aldp.system), frames)
    assert np.all(surface > 1.0)
    np.testing.assert_allclose((charges_off - true_vacuum).numpy(), surface, rtol=1e-6)


def test_full_gb_is_linear_in_lambda(aldp, frames):
    u = reduced_energies(solvation_field(aldp, "full_gb"), torch.tensor(frames), [0.0, 0.3, 1.0], T)
    np.testing.assert_allclose(u[1].numpy(), (0.7 * u[0] + 0.3 * u[2]).numpy(), rtol=1e-7)


@pytest.mark.parametrize("path", ["gb_charges", "full_gb"])
@pytest.mark.parametrize("lam", [0.0, 0.4, 1.0])
def test_du_dlambda_matches_finite_differences(aldp, frames, path, lam):
    field = solvation_field(aldp, path)
    x = torch.tensor(frames)
    h = 0.05  # central differences (the energy is defined past the ends too): exact for both paths,
    u = reduced_energies(field, x, [lam - h, lam + h], T)  # which are quadratic in λ
    finite = (u[1] - u[0]) / (2 * h)
    np.testing.assert_allclose(du_dlambda(field, x, lam, T).numpy(), finite.numpy(), rtol=1e-7, atol=1e-7)


def test_a_system_without_implicit_solvent_is_refused():
    vacuum = load_system("systems/alanine_dipeptide_vacuum.yaml")
    with pytest.raises(BoltzclfError, match="alanine_dipeptide_vacuum: has no implicit-solvent force"):
        solvation_field(vacuum, "full_gb")


def test_a_lambda_that_changes_nothing_is_refused(aldp):
    uncharged = copy.copy(aldp)
    uncharged.system = scaled_gb_system(aldp.system, 0.0)
    with pytest.raises(BoltzclfError, match="does not change the energy"):
        solvation_field(uncharged, "gb_charges")
    solvation_field(uncharged, "full_gb")  # the surface-area term still switches


def test_unknown_path_and_bad_lambda_grids_are_refused():
    with pytest.raises(BoltzclfError, match="not a solvation path"):
        solvation_field(None, "charges")
    for bad, message in (([0.0, 0.5, 1.2], r"\[0, 1\]"), ([0.0, 0.5], "both end states"),
                         ([0.2, 1.0], "both end states"), ([0.0, 0.6, 0.4, 1.0], "increasing"),
                         ([1.0], "at least 2")):
        assert re.search(message, lambda_problem(bad) or ""), bad
    assert lambda_problem([0, 0.5, 1]) is None
