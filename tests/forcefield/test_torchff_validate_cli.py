"""``boltzclf validate-energy``: results on perturbed and MD configurations, clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import mdtraj
import pytest
import torch

from boltzclf.cli.main import EXIT_USER_ERROR, main
from forcefield_testdata import md_frames

SPEC = Path(__file__).resolve().parents[2] / "systems" / "alanine_dipeptide_implicit.yaml"


def test_validate_energy_writes_results_for_perturbed_and_md_frames(tmp_path, aldp_implicit):
    traj_path = tmp_path / "md.dcd"
    frames = md_frames(aldp_implicit, 12, every=20, seed=30)
    mdtraj.Trajectory(frames, mdtraj.Topology.from_openmm(aldp_implicit.topology)).save_dcd(str(traj_path))
    out = tmp_path / "validation"
    argv = ["validate-energy", str(SPEC), "--n", "10", "--out", str(out), "--traj", str(traj_path),
            "--device", "cpu", "--timing-batch", "32", "--no-compile", "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["sets"]["perturbed"]["n"] == 10 and results["sets"]["md"]["n"] == 12
    assert results["max_rel_energy_error"] <= 1e-5
    assert results["max_rel_force_error"] <= 1e-5
    assert set(results["sets"]["md"]["per_force_max_rel_error"]) == {
        "0:HarmonicBondForce", "1:HarmonicAngleForce", "2:PeriodicTorsionForce", "3:NonbondedForce",
        "4:CustomGBForce"}
    assert results["torch_dtype"] == "float32"  # timed in float32; accuracy above is float64
    assert results["batch"] == 32 and not results["torch_compiled"]
    # the baseline is the faster of 1 thread and as many as torch uses, and the output says what was timed
    by_threads = results["openmm_evals_per_s_by_threads"]
    assert set(by_threads) == {"1", str(torch.get_num_threads())}
    assert results["openmm_evals_per_s"] == max(by_threads.values())
    assert results["speedup"] == pytest.approx(results["torch_evals_per_s"] / results["openmm_evals_per_s"])
    assert "torch eager float32" in results["timed"] and "32 configurations" in results["timed"]
    assert (out / "config.json").exists() and (out / "metadata.json").exists()


def test_missing_trajectory_is_a_clear_error(tmp_path, capsys):
    argv = ["validate-energy", str(SPEC), "--out", str(tmp_path / "v"), "--traj", str(tmp_path / "nope.dcd")]
    assert main(argv) == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert "--traj" in error and "nope.dcd" in error
    assert not (tmp_path / "v").exists()
