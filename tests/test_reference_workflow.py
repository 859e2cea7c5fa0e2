"""``boltzclf run workflows/*_reference.yaml``: reference ensembles made and analysed by one command.

The smoke presets run in seconds; the analysis is checked against independent computations of the
same quantities from the written trajectory (mdtraj dihedrals and RMSD, numpy fractions).
"""
import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from boltzclf.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def run_smoke(name: str, out: Path) -> dict:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)  # the workflow's system path is relative to the working directory
        assert main(["run", str(REPO / "workflows" / name), "--preset", "smoke", "--out", str(out),
                     "--device", "cpu"]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def aldp_smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "aldp"
    run_smoke("aldp_implicit_reference.yaml", out)
    return out


def test_aldp_reference_populations_match_the_trajectory(aldp_smoke):
    out = aldp_smoke
    results = json.loads((out / "results.json").read_text())
    traj = mdtraj.load(str(out / "dynamics" / "trajectory.dcd"), top=str(out / "dynamics" / "topology.pdb"))
    phi = np.degrees(mdtraj.compute_phi(traj)[1][:, 0])
    psi = np.degrees(mdtraj.compute_psi(traj)[1][:, 0])
    assert results["frames_at_target_temperature"] == traj.n_frames == 20 * 4
    cvs = np.load(out / "cvs.npz")
    assert cvs["phi"].shape == (4, 20)  # (walkers, frames): each column in time order
    # the trajectory is time-major (frame k = time k // W of walker k % W)
    np.testing.assert_allclose(np.degrees(cvs["phi"]).T.ravel(), phi, atol=1e-3)
    beta = (psi >= 30) | (psi < -120)
    expected = {"C5": np.mean(beta & (phi < -115)), "C7eq": np.mean(beta & (phi >= -115) & (phi < 0)),
                "alphaR": np.mean(~beta & (phi < 0)), "alphaL": np.mean(phi >= 0)}
    for name, fraction in expected.items():
        assert results["populations"][name]["value"] == pytest.approx(fraction, abs=1e-12)
    exchange = results["dynamics"]["replica_exchange"]
    assert len(exchange["acceptance_per_pair"]) == 3 and results["dynamics"]["n_nonfinite"] == 0
    assert (out / "report.png").stat().st_size > 10_000 and (out / "surface.npz").exists()
    assert set(results["delta_f_phi_positive_vs_negative"]) >= {"value_kT", "se_kT", "value_kJ_per_mol", "value_kcal_per_mol"}


def test_chignolin_reference_folded_fraction_matches_the_rmsd(tmp_path):
    out = tmp_path / "cln"
    results = run_smoke("chignolin_reference.yaml", out)
    traj = mdtraj.load(str(out / "dynamics" / "trajectory.dcd"), top=str(out / "dynamics" / "topology.pdb"))
    native = mdtraj.load(str(REPO / "systems" / "chignolin_cln025.pdb"))
    ca = traj.topology.select("name CA")
    rmsd = mdtraj.rmsd(traj, native, atom_indices=ca)
    assert results["folded_fraction"]["value"] == pytest.approx(np.mean(rmsd < 0.2), abs=1e-12)
    np.testing.assert_allclose(np.load(out / "cvs.npz")["ca_rmsd_nm"].T.ravel(), rmsd, atol=1e-5)


def test_missing_system_file_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    workflow = tmp_path / "w.yaml"
    workflow.write_text("workflow: reference_ensemble\nsystem: nowhere.yaml\n"
                        "dynamics: {ns: 0.001, temperature: 300.0}\n")
    assert main(["run", str(workflow), "--out", str(tmp_path / "out")]) == 2
    assert "nowhere.yaml: file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_mbar_estimates_pool_every_temperature_with_aligned_frames(aldp_smoke):
    """The MBAR section must pair each slot's frames with that slot's energies: recomputed here from
    the slot DCDs with mdtraj and numpy (the weights from the tested MBAR estimator)."""
    from boltzclf.estimators.temperature_mbar import temperature_weights

    out = aldp_smoke  # mbar is on by default
    results = json.loads((out / "results.json").read_text())["mbar_all_temperatures"]
    dyn = out / "dynamics"
    energies = np.load(dyn / "energies.npz")
    potential = energies["potential_energy"]  # (F, R, W)
    n_frames, n_replicas, walkers = potential.shape
    phis, psis = [], []
    for slot in range(n_replicas):
        name = "trajectory.dcd" if slot == 0 else f"slots/slot_{slot:02d}.dcd"
        traj = mdtraj.load(str(dyn / name), top=str(dyn / "topology.pdb"))
        phis.append(np.degrees(mdtraj.compute_phi(traj)[1][:, 0]).reshape(n_frames, walkers))
        psis.append(np.degrees(mdtraj.compute_psi(traj)[1][:, 0]).reshape(n_frames, walkers))
    phi, psi = np.stack(phis, 1).ravel(), np.stack(psis, 1).ravel()
    state = np.broadcast_to(np.arange(n_replicas)[None, :, None], potential.shape).ravel()
    w = np.exp(temperature_weights(potential.ravel(), state, energies["temperatures_K"], 300.0).log_w)
    c5 = ((psi >= 30) | (psi < -120)) & (phi < -115)
    assert results["populations"]["C5"]["value"] == pytest.approx(np.sum(w * c5), abs=1e-9)
    assert results["populations"]["alphaL"]["value"] == pytest.approx(np.sum(w * (phi >= 0)), abs=1e-9)
    assert results["frames"] == phi.size
