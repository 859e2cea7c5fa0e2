"""``boltzclf simulate``: mdtraj-readable output, consistent energies, exact resume, refusals."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from boltzclf.cli.main import main
from boltzclf.core.provenance import sha256
from openmm_testdata import assert_stored_energies_match, kill_boltzclf_when, load_run as load

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "systems" / "alanine_dipeptide_implicit.yaml"
FAST = ["--threads", "1", "--equilibration-ps", "0.5", "--stride-ps", "0.1", "--no-progress"]


def simulate(out, ns="0.005", *extra):
    return main(["simulate", str(SPEC), "--out", str(out), "--ns", ns, *FAST, *extra])


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
    assert_stored_energies_match(short_run, SPEC)


def test_killed_run_resumes_to_exactly_the_uninterrupted_frames(tmp_path):
    args = ["0.012", "--checkpoint-frames", "20"]  # 120 frames in 6 chunks; killed after the 3rd
    assert simulate(tmp_path / "full", *args) == 0
    killed = tmp_path / "killed"
    kill_boltzclf_when(["simulate", str(SPEC), "--out", str(killed), "--ns", *args, *FAST],
                       killed / "chunks" / "chunk_00002.pt", killed)
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


def test_parallel_tempering_resumes_and_exports_lowest_temperature_frames(tmp_path):
    """Killed mid-run and re-run: all frames present, energies those of the stored frames at 300 K."""
    spec = REPO / "systems" / "alanine_dipeptide_vacuum.yaml"
    out = tmp_path / "pt"
    args = ["simulate", str(spec), "--out", str(out), "--ns", "0.03", *FAST, "--replicas", "3",
            "--max-temperature", "400", "--checkpoint-frames", "5"]
    proc = subprocess.Popen([sys.executable, "-m", "boltzclf", *args],
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "tempering.nc").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(3.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists(), "the run finished before it could be killed"
    assert main(args) == 0
    traj = load(out)
    assert traj.n_frames == 300
    assert_stored_energies_match(out, spec)


def test_parallel_tempering_needs_a_higher_maximum(tmp_path, capsys):
    assert simulate(tmp_path / "pt", "0.001", "--replicas", "3") == 2
    assert "--max-temperature" in capsys.readouterr().err


VACUUM = REPO / "systems" / "alanine_dipeptide_vacuum.yaml"
TEMPERING = ["--replicas", "2", "--max-temperature", "400"]


def tempering(out, *extra):
    return main(["simulate", str(VACUUM), "--out", str(out), "--ns", "0.002", *FAST, *TEMPERING, *extra])


@pytest.mark.parametrize("extra, message", [
    (["--platform", "Foo", *TEMPERING], "OpenMM platform 'Foo' is not available"),
    (["--platform", "Foo"], "OpenMM platform 'Foo' is not available"),
    (["--max-temperature", "400"], "--max-temperature: is only used by parallel tempering"),
])
def test_bad_tempering_options_exit_2_and_create_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert simulate(out, "0.001", *extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_parallel_tempering_killed_during_set_up_repeats_it(tmp_path, monkeypatch):
    """openmmtools writes its storage before minimisation and equilibration: a run stopped in
    between must not resume production from the raw structure."""
    from openmmtools.multistate import ParallelTemperingSampler

    original, calls = ParallelTemperingSampler.equilibrate, []

    def killed(self, n_iterations, *args, **kwargs):
        raise KeyboardInterrupt

    def counted(self, n_iterations, *args, **kwargs):
        calls.append(n_iterations)
        return original(self, n_iterations, *args, **kwargs)

    out = tmp_path / "pt"
    monkeypatch.setattr(ParallelTemperingSampler, "equilibrate", killed)
    with pytest.raises(KeyboardInterrupt):
        tempering(out)
    assert (out / "tempering.nc").exists() and not (out / "tempering_setup.json").exists()
    monkeypatch.setattr(ParallelTemperingSampler, "equilibrate", counted)
    assert tempering(out) == 0
    assert calls == [5]  # 0.5 ps of equilibration in 0.1 ps iterations, run again
    assert load(out).n_frames == 20


@pytest.mark.slow
def test_two_tempering_runs_on_different_platforms_in_one_process(tmp_path):
    """openmmtools' global context cache refuses a platform change; each run has its own."""
    assert tempering(tmp_path / "reference", "--platform", "Reference") == 0
    assert tempering(tmp_path / "cpu", "--platform", "CPU") == 0
    assert load(tmp_path / "cpu").n_frames == 20


def test_a_truncated_chunk_is_named(tmp_path, capsys):
    out = tmp_path / "run"
    assert simulate(out, "0.002", "--checkpoint-frames", "10") == 0
    for name in ("results.json", "trajectory.dcd"):
        (out / name).unlink()
    chunk = out / "chunks" / "chunk_00001.pt"
    chunk.write_bytes(chunk.read_bytes()[:300])
    assert simulate(out, "0.002", "--checkpoint-frames", "10") == 2
    assert "chunk_00001.pt: unreadable" in capsys.readouterr().err
