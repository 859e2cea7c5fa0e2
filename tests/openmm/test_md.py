"""``boltzclf simulate``: mdtraj-readable output, consistent energies, exact resume, refusals."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from boltzclf.cli.main import main
from boltzclf.core.provenance import sha256
from boltzclf.openmm import load_system

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "systems" / "alanine_dipeptide_implicit.yaml"
FAST = ["--threads", "1", "--equilibration-ps", "0.5", "--stride-ps", "0.1", "--no-progress"]


def simulate(out, ns="0.005", *extra):
    return main(["simulate", str(SPEC), "--out", str(out), "--ns", ns, *FAST, *extra])


def load(out):
    return mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("md") / "run"
    assert simulate(out, "0.005", "--checkpoint-frames", "20") == 0
    return out


def test_output_opens_with_mdtraj(short_run):
    traj = load(short_run)
    assert traj.n_frames == 50 and traj.n_atoms == 22
    energies = np.load(short_run / "energies.npz")
    assert energies["reduced_energy"].shape == (50,)
    np.testing.assert_allclose(energies["time"], 0.1 * np.arange(1, 51), rtol=1e-12)


def test_stored_energies_match_openmm_reevaluation(short_run):
    """Re-evaluate the DCD frames; the only difference allowed is float32 storage of positions."""
    system = load_system(SPEC)
    x = torch.from_numpy(load(short_run).xyz.astype(np.float64))
    energy = system.energy(x).numpy()
    stored = np.load(short_run / "energies.npz")["reduced_energy"]
    # DCD keeps float32 Angstrom: each coordinate is off by at most half a float32 spacing, so to
    # first order |Δu| <= Σ|f|·δ (kT), plus single-precision force-field arithmetic (~1e-6 relative).
    spacing_nm = np.spacing((x.abs().numpy() * 10).astype(np.float32)).astype(np.float64) / 20
    bound = (system.force(x).abs().numpy() * spacing_nm).sum(axis=(1, 2)) + 1e-6 * np.abs(stored)
    assert np.all(np.abs(energy - stored) <= bound)
    system.close()


def test_killed_run_resumes_to_exactly_the_uninterrupted_frames(tmp_path):
    args = ["0.03", "--checkpoint-frames", "20"]
    assert simulate(tmp_path / "full", *args) == 0
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "boltzclf", "simulate", str(SPEC), "--out", str(killed),
               "--ns", *args, *FAST]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "chunks" / "chunk_00002.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists(), "the run finished before it could be killed"
    assert simulate(killed, *args) == 0
    np.testing.assert_array_equal(load(killed).xyz, load(tmp_path / "full").xyz)
    for name in ("reduced_energy", "time"):
        np.testing.assert_array_equal(np.load(killed / "energies.npz")[name],
                                      np.load(tmp_path / "full" / "energies.npz")[name])


def test_different_config_is_refused_and_nothing_overwritten(short_run, capsys):
    before = {p.name: sha256(p) for p in short_run.iterdir() if p.is_file()}
    assert simulate(short_run, "0.005", "--checkpoint-frames", "20", "--seed", "7") == 2
    assert "different config" in capsys.readouterr().err
    assert before == {p.name: sha256(p) for p in short_run.iterdir() if p.is_file()}


def test_corrupt_checkpoint_is_named(tmp_path, capsys):
    out = tmp_path / "run"
    assert simulate(out, "0.002") == 0
    (out / "results.json").unlink()
    (out / "checkpoint.pt").write_bytes(b"garbage")
    assert simulate(out, "0.002") == 2
    assert "checkpoint.pt: cannot resume" in capsys.readouterr().err


def test_malformed_spec_exits_2_and_creates_nothing(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: [unclosed\n")
    out = tmp_path / "out"
    assert main(["simulate", str(spec), "--out", str(out), "--ns", "0.001"]) == 2
    assert "bad.yaml: malformed YAML" in capsys.readouterr().err
    assert not out.exists()
