"""``boltzclf simulate --engine torch`` under ``torchrun`` (2 gloo processes on CPU): process r runs
columns r·W/2 ... (r+1)·W/2 − 1 with the stream ``stream_seed(seed, r)``, so the 2-process run must
hold, column for column and bit for bit, the frames of two 1-process runs of W/2 walkers with those
seeds; replica-exchange counts add up; the run is refused on another number of processes; and a
2-process run killed part-way resumes to the frames of an uninterrupted one (slow)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from boltzclf.core.distributed import stream_seed
from boltzclf.dynamics.output import load_frames
from torchrun_launch import ENV, REPO, launcher

SPEC = REPO / "systems" / "alanine_dipeptide_implicit.yaml"
ARGS = ["--engine", "torch", "--threads", "1", "--equilibration-ps", "0.05", "--stride-ps", "0.05",
        "--no-compile", "--dtype", "float64", "--no-progress", "--checkpoint-frames", "4",
        "--replicas", "2", "--max-temperature", "400", "--exchange-ps", "0.05", "--device", "cpu"]


def command(out: Path, walkers: int, seed: int, processes: int = 1, ns: str = "0.0005") -> list[str]:
    return launcher(processes) + ["-m", "boltzclf", "simulate", str(SPEC), "--out", str(out),
                                  "--walkers", str(walkers), "--seed", str(seed), *ARGS, "--ns", ns]


def simulate(out: Path, walkers: int, seed: int, processes: int = 1,
             ns: str = "0.0005") -> subprocess.CompletedProcess:
    return subprocess.run(command(out, walkers, seed, processes, ns), env=ENV, capture_output=True, text=True,
                          timeout=600)


def test_two_processes_run_the_columns_of_two_single_runs(tmp_path):
    runs = {"two": simulate(tmp_path / "two", 4, 5, processes=2),
            "rank0": simulate(tmp_path / "rank0", 2, stream_seed(5, 0)),
            "rank1": simulate(tmp_path / "rank1", 2, stream_seed(5, 1))}
    for name, done in runs.items():
        assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
    assert runs["two"].stdout.count("walkers x") == 1  # rank 0 alone reports
    two = load_frames(tmp_path / "two")
    assert two.shape == (10, 4, 22, 3)
    np.testing.assert_array_equal(two[:, :2], load_frames(tmp_path / "rank0"))
    np.testing.assert_array_equal(two[:, 2:], load_frames(tmp_path / "rank1"))
    energies = {name: np.load(tmp_path / name / "energies.npz") for name in runs}
    for key in ("potential_energy", "labels"):
        np.testing.assert_array_equal(energies["two"][key],
                                      np.concatenate([energies["rank0"][key], energies["rank1"][key]], axis=2))
    results = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in runs}
    assert results["two"]["processes"] == 2 and results["two"]["walkers"] == 4
    exchange = {name: results[name]["replica_exchange"] for name in runs}
    rates = [exchange[name]["acceptance_per_pair"][0] for name in ("rank0", "rank1")]
    assert exchange["two"]["acceptance_per_pair"][0] == sum(rates) / 2  # equal attempts in each half
    assert exchange["two"]["round_trips"] == exchange["rank0"]["round_trips"] + exchange["rank1"]["round_trips"]

    (tmp_path / "two" / "results.json").unlink()  # pretend it stopped after its last checkpoint
    again = simulate(tmp_path / "two", 4, 5, processes=1)
    assert again.returncode == 2
    assert "written by 2 processes; resume it with 2" in again.stderr


def test_walkers_the_processes_cannot_share_are_refused_before_any_output(tmp_path):
    done = simulate(tmp_path / "odd", 3, 0, processes=2)
    assert done.returncode != 0
    assert "--walkers: 3 cannot be shared by 2 processes" in done.stderr
    assert not (tmp_path / "odd").exists()


@pytest.mark.slow
def test_two_processes_killed_mid_run_resume_to_the_same_frames(tmp_path):
    """SIGKILL of the whole 2-process run once rank 1 has written its second chunk; the resumed run
    (again 2 processes) must equal an uninterrupted one bit for bit."""
    full = simulate(tmp_path / "full", 4, 5, processes=2, ns="0.002")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed, 4, 5, 2, "0.002"), env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = killed / "chunks" / "chunk_00001_rank001.pt"
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists(), "the run finished before it could be killed"
    resumed = simulate(killed, 4, 5, processes=2, ns="0.002")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    np.testing.assert_array_equal(load_frames(killed), load_frames(tmp_path / "full"))
    for key in ("potential_energy", "labels", "kinetic"):
        np.testing.assert_array_equal(np.load(killed / "energies.npz")[key],
                                      np.load(tmp_path / "full" / "energies.npz")[key])
