"""``boltzclf pmf``: outputs agree with the estimator on mdtraj's CVs; bad inputs exit 2 untouched."""
import json

import mdtraj
import numpy as np
import pytest
from openmm_testdata import SYSTEMS_DIR

from boltzclf.cli.main import main
from boltzclf.cli.pmf import RAMACHANDRAN_BASINS
from boltzclf.estimators.pmf import basin_free_energies, histogram_free_energy

SPEC = SYSTEMS_DIR / "alanine_dipeptide_implicit.yaml"


@pytest.fixture(scope="module")
def trajectory(systems, tmp_path_factory):
    """500 noisy ALDP frames as DCD + PDB (a stand-in for MD output)."""
    system = systems["alanine_dipeptide_implicit"]
    rng = np.random.default_rng(0)
    x = system.positions + rng.normal(scale=0.04, size=(500, *system.positions.shape))
    directory = tmp_path_factory.mktemp("traj")
    traj = mdtraj.Trajectory(x, system.mdtraj_topology)
    traj.save_dcd(str(directory / "trajectory.dcd"))
    traj[0].save_pdb(str(directory / "topology.pdb"))
    return directory


def pmf(trajectory, out, *extra, spec=SPEC):
    return main(["pmf", str(trajectory), "--system", str(spec), "--out", str(out), "--bins", "12",
                 "--blocks", "10", "--bootstrap", "50", *extra])


def test_pmf_outputs_match_the_estimator_on_mdtraj_dihedrals(trajectory, tmp_path):
    log_w = np.random.default_rng(1).normal(size=500)
    np.save(tmp_path / "lw.npy", log_w)
    assert pmf(trajectory, tmp_path / "out", "--log-weights", str(tmp_path / "lw.npy")) == 0
    traj = mdtraj.load(str(trajectory / "trajectory.dcd"), top=str(trajectory / "topology.pdb"))
    angles = np.column_stack([mdtraj.compute_phi(traj)[1][:, 0], mdtraj.compute_psi(traj)[1][:, 0]])
    expected = histogram_free_energy(angles, [(-np.pi, np.pi)] * 2, bins=12, periodic=True,
                                     log_weights=log_w, n_blocks=10, n_bootstrap=50)
    result = json.loads((tmp_path / "out" / "pmf.json").read_text())
    got = np.array(result["surface"]["free_energy_kT"], dtype=float)  # null (empty bin) -> nan
    finite = np.isfinite(expected.free_energy)
    np.testing.assert_allclose(got[finite], expected.free_energy[finite], atol=1e-4)
    assert np.isnan(got[~finite]).all()
    boxes = {k: [tuple(np.radians(r)) for r in v] for k, v in RAMACHANDRAN_BASINS.items()}
    expected_basins = basin_free_energies(angles, boxes, log_weights=log_w, n_blocks=10, n_bootstrap=50)
    assert expected_basins["C5"]["sampled"] or expected_basins["C7eq"]["sampled"]  # extended region from the start
    for name, basin in expected_basins.items():
        got_basin = result["basins"][name]
        assert got_basin["sampled"] == basin["sampled"], name
        if basin["sampled"]:
            assert abs(got_basin["free_energy_kT"] - basin["free_energy_kT"]) < 1e-4, name
    assert (tmp_path / "out" / "pmf.png").stat().st_size > 0
    arrays = np.load(tmp_path / "out" / "pmf.npz")
    assert arrays["phi_free_energy"].shape == (12,) and arrays["surface_stderr"].shape == (12, 12)


def test_wrong_system_names_the_atom_mismatch(trajectory, tmp_path, capsys):
    out = tmp_path / "out"
    assert pmf(trajectory, out, "--cv", "rmsd_ca", spec=SYSTEMS_DIR / "chignolin_implicit.yaml") == 2
    assert "has 22 atoms, system chignolin_implicit has 166" in capsys.readouterr().err
    assert not out.exists()


def test_wrong_log_weight_shape_exits_2_and_leaves_outputs(trajectory, tmp_path, capsys):
    out = tmp_path / "out"
    assert pmf(trajectory, out) == 0
    before = (out / "pmf.json").read_bytes()
    np.save(tmp_path / "lw.npy", np.zeros(7))
    assert pmf(trajectory, out, "--log-weights", str(tmp_path / "lw.npy")) == 2
    assert "expected shape (500,), got (7,)" in capsys.readouterr().err
    assert (out / "pmf.json").read_bytes() == before


def test_unknown_cv_exits_2(trajectory, tmp_path, capsys):
    assert pmf(trajectory, tmp_path / "out", "--cv", "phi,omega") == 2
    assert "--cv omega: unknown collective variable" in capsys.readouterr().err


def test_nan_coordinates_in_a_trajectory_are_named(systems, tmp_path, capsys):
    system = systems["alanine_dipeptide_implicit"]
    x = np.repeat(system.positions[None], 30, axis=0)
    x[17, 4] = np.nan
    traj = mdtraj.Trajectory(x, system.mdtraj_topology)
    traj.save_dcd(str(tmp_path / "nan.dcd"))
    out = tmp_path / "out"
    assert pmf(tmp_path / "nan.dcd", out, "--blocks", "3") == 2
    assert "nan.dcd: frame 17 has a non-finite coordinate (atom 4)" in capsys.readouterr().err
    assert not out.exists()
