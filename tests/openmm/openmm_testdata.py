"""Paths and names of the shipped systems, shared by the tests in this directory."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np
import torch

from boltzclf.openmm import load_system

REPO = Path(__file__).resolve().parents[2]
SYSTEMS_DIR = REPO / "systems"
SYSTEM_NAMES = ("alanine_dipeptide_vacuum", "alanine_dipeptide_implicit", "chignolin_implicit")


def load_run(out: Path) -> mdtraj.Trajectory:
    """The trajectory of a ``boltzclf simulate`` run directory."""
    return mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))


def assert_stored_energies_match(out: Path, spec: Path) -> None:
    """Re-evaluate the DCD frames with OpenMM; the only difference allowed is float32 storage of positions.

    ``energies.npz``'s ``reduced_energy`` is ``(F,)`` or, for the torch engine, ``(F, W)`` in the
    DCD's time-major frame order.
    """
    system = load_system(spec)
    x = torch.from_numpy(load_run(out).xyz.astype(np.float64))
    stored = np.load(out / "energies.npz")["reduced_energy"].ravel()
    # DCD keeps float32 Angstrom: each coordinate is off by at most half a float32 spacing, so to
    # first order |Δu| <= Σ|f|·δ (kT), plus single-precision force-field arithmetic (1e-5 relative).
    spacing_nm = np.spacing((x.abs().numpy() * 10).astype(np.float32)).astype(np.float64) / 20
    bound = (system.force(x).abs().numpy() * spacing_nm).sum(axis=(1, 2)) + 1e-5 * np.abs(stored)
    assert np.all(np.abs(system.energy(x).numpy() - stored) <= bound)
    system.close()


def kill_boltzclf_when(cli_args: list[str], marker: Path, out: Path, timeout: float = 120.0) -> None:
    """Run ``python -m boltzclf *cli_args`` and SIGKILL it as soon as ``marker`` exists; the run in
    ``out`` must not have finished by then."""
    proc = subprocess.Popen([sys.executable, "-m", "boltzclf", *cli_args], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists(), "the run finished before it could be killed"
