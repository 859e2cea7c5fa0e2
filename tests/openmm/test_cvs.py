"""Torch CVs against mdtraj on random configurations; gradients against finite differences."""
import mdtraj
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from boltzclf.core.errors import BoltzclfError
from boltzclf.openmm.cvs import Q_BETA, Q_LAMBDA, kabsch_rmsd, make_cv


def configurations(system, n=64, scale=0.03, seed=0):
    """Noisy, randomly rotated and translated copies of the reference structure, float64 nm."""
    rng = np.random.default_rng(seed)
    x = system.positions + rng.normal(scale=scale, size=(n, *system.positions.shape))
    rotations = Rotation.random(n, random_state=seed).as_matrix()
    return np.einsum("bij,bnj->bni", rotations, x) + rng.normal(size=(n, 1, 3))


def trajectory(system, x):
    return mdtraj.Trajectory(x, system.mdtraj_topology)


@pytest.mark.parametrize("kind", ["phi", "psi"])
def test_aldp_dihedrals_match_mdtraj(systems, kind):
    system = systems["alanine_dipeptide_implicit"]
    x = configurations(system, scale=0.1)
    cv = make_cv(kind, system.mdtraj_topology, system.positions)
    expected = getattr(mdtraj, f"compute_{kind}")(trajectory(system, x))[1][:, 0]
    assert cv.periodic
    difference = np.angle(np.exp(1j * (cv(torch.from_numpy(x)).numpy() - expected)))
    assert np.abs(difference).max() < 1e-5  # mdtraj computes in float32


def test_chignolin_rmsd_matches_mdtraj(systems):
    system = systems["chignolin_implicit"]
    x = configurations(system)
    ca = system.mdtraj_topology.select("name CA")
    expected = mdtraj.rmsd(trajectory(system, x), trajectory(system, system.positions[None]), 0,
                           atom_indices=ca)
    got = make_cv("rmsd_ca", system.mdtraj_topology, system.positions)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.min() > 0.01  # the noise is real, so the check above is not trivially 0 == 0


def test_kabsch_rmsd_is_zero_for_rigid_motions_and_rejects_reflections():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(10, 3))
    rot = Rotation.random(4, random_state=3).as_matrix()
    moved = torch.from_numpy(np.einsum("bij,nj->bni", rot, ref) + rng.normal(size=(4, 1, 3)))
    assert kabsch_rmsd(moved, torch.from_numpy(ref)).max() < 1e-7
    mirrored = torch.from_numpy(ref * np.array([1, 1, -1]))[None]
    assert kabsch_rmsd(mirrored, torch.from_numpy(ref)).item() > 0.1


def test_chignolin_native_contacts_match_mdtraj_distances(systems):
    system = systems["chignolin_implicit"]
    top = system.mdtraj_topology
    x = configurations(system, scale=0.05)
    heavy = top.select("element != H")
    pairs = np.array([(i, j) for i in heavy for j in heavy
                      if i < j and abs(top.atom(i).residue.index - top.atom(j).residue.index) > 3])
    r0 = mdtraj.compute_distances(trajectory(system, system.positions[None]), pairs)[0]
    native = pairs[r0 < 0.45]
    r = mdtraj.compute_distances(trajectory(system, x), native)
    expected = np.mean(1.0 / (1 + np.exp(Q_BETA * (r - Q_LAMBDA * r0[r0 < 0.45]))), axis=1)
    cv = make_cv("q_native", top, system.positions)
    np.testing.assert_allclose(cv(torch.from_numpy(x)).numpy(), expected, atol=1e-5)
    assert cv(torch.from_numpy(system.positions[None])).item() > 0.99


@pytest.mark.parametrize("name, atoms", [("end_to_end", ("resid 0 and name CA", "resid 9 and name CA")),
                                         ("hb_N3_O8", ("resid 2 and name N", "resid 7 and name O"))])
def test_chignolin_distances_match_mdtraj(systems, name, atoms):
    system = systems["chignolin_implicit"]
    top = system.mdtraj_topology
    pair = [[top.select(atoms[0])[0], top.select(atoms[1])[0]]]
    x = configurations(system)
    expected = mdtraj.compute_distances(trajectory(system, x), pair)[:, 0]
    got = make_cv(name, top, system.positions)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["phi", "rmsd_ca", "q_native", "hb_N3_O8"])
def test_cv_gradients_match_finite_differences(systems, name):
    system = systems["alanine_dipeptide_implicit" if name == "phi" else "chignolin_implicit"]
    cv = make_cv(name, system.mdtraj_topology, system.positions)
    x = torch.from_numpy(configurations(system, n=2, scale=0.02, seed=5)).requires_grad_()
    assert torch.autograd.gradcheck(cv, (x,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name, message", [("phi", "has 9 phi angles"), ("psi12", "no psi angle for residue 12"),
                                           ("hb_N3_O99", "no atom O in residue 99"),
                                           ("radius", "unknown collective variable")])
def test_bad_cv_names_are_explained(systems, name, message):
    system = systems["chignolin_implicit"]
    with pytest.raises(BoltzclfError, match=message):
        make_cv(name, system.mdtraj_topology, system.positions)
