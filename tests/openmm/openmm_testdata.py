"""Paths and names of the shipped systems, shared by the tests in this directory."""
from pathlib import Path

import mdtraj
import numpy as np
import torch

from boltzclf.openmm import load_system

SYSTEMS_DIR = Path(__file__).resolve().parents[2] / "systems"
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
