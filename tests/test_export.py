"""``boltzclf export``: the learned U(t_min, ·) as TorchScript in OpenMM's units, round-tripped.

openmm-torch cannot be loaded here (its PyPI wheel links the CUDA build of torch), so the exported
file is checked by loading it back with ``torch.jit.load`` and comparing energies and autograd forces
with the model's own energy and score in kJ/mol and kJ/mol/nm.
"""
from __future__ import annotations

from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from boltzclf.cli.main import EXIT_USER_ERROR, main
from boltzclf.openmm import load_system
from boltzclf.pipelines.experiment import load_trained

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "systems" / "alanine_dipeptide_implicit.yaml"
R_KJ_PER_MOL_K = 0.00831446261815324


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A molecular run of 3 steps: (run directory, atoms kept or None) for all-atom and coarse-grained."""
    system = load_system(SPEC)
    tmp = tmp_path_factory.mktemp("export")
    frames = system.positions[None] + 0.01 * np.random.default_rng(0).standard_normal((40, system.n_atoms, 3))
    mdtraj.Trajectory(frames.astype(np.float32), system.mdtraj_topology).save_dcd(str(tmp / "frames.dcd"))
    runs = {}
    for name, atoms in (("all_atom", None), ("coarse", [4, 6, 8, 14, 16])):
        subset = f", atoms: {atoms}" if atoms else ""
        (tmp / f"{name}.yaml").write_text(
            f"data: {{system: {SPEC}, trajectory: {tmp / 'frames.dcd'}, validation_fraction: 0.2{subset}}}\n"
            "grid: {kind: log_snr, n_levels: 8, t_min: 1.0e-3}\n"
            "model: {kind: pairwise, hidden: 16, n_layers: 2, time_dim: 8}\n"
            "training: {steps: 3, batch_size: 8, checkpoint_every: 3, log_every: 3, dataset_size: 0}\n"
            "evaluation: {n_samples: 16, n_levels: 2}\n")
        assert main(["train", str(tmp / f"{name}.yaml"), "--out", str(tmp / name), "--device", "cpu"]) == 0
        runs[name] = (tmp / name, atoms)
    return runs, system


@pytest.mark.parametrize("name", ["all_atom", "coarse"])
def test_exported_energy_and_forces_equal_the_model_in_kj_per_mol(trained, tmp_path, name):
    runs, system = trained
    run, atoms = runs[name]
    out = tmp_path / "energy.pt"
    assert main(["export", str(run), "--out", str(out)]) == 0
    exported = torch.jit.load(str(out))
    model, _ = load_trained(run, torch.device("cpu"))
    kT = R_KJ_PER_MOL_K * system.temperature
    rng = np.random.default_rng(1)
    reference = system.positions if atoms is None else system.positions[atoms]
    for _ in range(3):
        x = torch.as_tensor(reference + 0.02 * rng.standard_normal(reference.shape), dtype=torch.float32)
        x.requires_grad_(True)
        energy = exported(x)
        (gradient,) = torch.autograd.grad(energy, x)
        t_min = model.levels[:1]
        expected_energy = float(model.energy(t_min, x.detach()[None])[0].detach()) * kT
        expected_force = model.score(t_min, x.detach()[None])[0] * kT  # force = −∇(kT·U) = kT·score
        assert energy.shape == () and energy.dtype == torch.float32
        assert float(energy.detach()) == pytest.approx(expected_energy, rel=1e-5, abs=1e-4)
        torch.testing.assert_close(-gradient, expected_force, rtol=1e-4, atol=1e-3)


def test_export_refuses_an_existing_file_and_an_analytic_run(trained, tmp_path, capsys):
    runs, _ = trained
    existing = tmp_path / "energy.pt"
    existing.write_bytes(b"keep me")
    assert main(["export", str(runs["all_atom"][0]), "--out", str(existing)]) == EXIT_USER_ERROR
    assert existing.read_bytes() == b"keep me"
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e.pt")]) == EXIT_USER_ERROR
    assert "no checkpoint.pt" in capsys.readouterr().err
