"""Molecular datasets and training: centring, σ_d, splits, rotations, the invariant potential, exact resume."""
import dataclasses
import math
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from boltzclf.cli.main import main
from boltzclf.core.atomic import write_json
from boltzclf.core.errors import BoltzclfError
from boltzclf.diffusion import EDM, karras_grid
from boltzclf.models import EnergyModel
from boltzclf.models.pairwise import PairwisePotential, proper_dihedrals
from boltzclf.openmm.system import load_system
from boltzclf.pipelines.experiment import load_trained, train_experiment
from boltzclf.training.config import ExperimentConfig, GridConfig, ModelConfig, ProcessConfig, TrainingConfig
from boltzclf.openmm.cvs import kabsch_align
from boltzclf.training.molecular_data import MolecularDataConfig, load_dataset, particle_sigma, random_rotations, \
    subset_bonds

REPO = Path(__file__).resolve().parents[1]
SPEC = str(REPO / "systems" / "alanine_dipeptide_vacuum.yaml")
CPU = torch.device("cpu")


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def system():
    return load_system(SPEC)


def _frames(system, n: int, seed: int = 0, spread: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return system.positions[None] + spread * rng.standard_normal((n, system.n_atoms, 3))


@pytest.fixture(scope="module")
def trajectory(system, tmp_path_factory) -> Path:
    """A DCD of 60 ALDP frames (the native structure, jittered by 0.01 nm), displaced by a random shift each."""
    frames = _frames(system, 60) + np.random.default_rng(1).uniform(-2, 2, (60, 1, 3))
    path = tmp_path_factory.mktemp("traj") / "frames.dcd"
    mdtraj.Trajectory(frames.astype(np.float32), system.mdtraj_topology).save_dcd(str(path))
    return path


@pytest.fixture(scope="module")
def run_directory(system, tmp_path_factory) -> Path:
    """A batched-dynamics-shaped run: time-major DCD of 5 frames x 4 walker columns, topology, results."""
    out = tmp_path_factory.mktemp("run")
    frames = _frames(system, 20, seed=2)
    mdtraj.Trajectory(frames.astype(np.float32), system.mdtraj_topology).save_dcd(str(out / "trajectory.dcd"))
    mdtraj.Trajectory(system.positions[None].astype(np.float32), system.mdtraj_topology).save_pdb(str(out / "topology.pdb"))
    write_json(out / "results.json", {"n_frames": 5, "walkers": 4})
    return out


def test_frames_are_centred_and_sigma_data_follows_its_definition(system, trajectory):
    dataset = load_dataset(MolecularDataConfig(SPEC, str(trajectory), validation_fraction=0.2), system)
    assert dataset.train.shape == (48, 22, 3) and dataset.validation.shape == (12, 22, 3)
    assert dataset.train.mean(dim=1).abs().max() < 1e-6
    raw = mdtraj.load(str(trajectory), top=system.mdtraj_topology).xyz.astype(np.float64)[:48]
    centred = raw - raw.mean(axis=1, keepdims=True)  # independent: numpy
    expected = math.sqrt((centred ** 2).sum(axis=(1, 2)).mean() / (3 * 21))
    assert dataset.sigma_data == pytest.approx(expected, rel=1e-6)


def test_sigma_data_of_hand_made_frames():
    # two atoms at ±a on x: ‖x_c‖² = 2a², over 3(n − 1) = 3 degrees of freedom
    a = 0.3
    frames = torch.tensor([[[a, 0.0, 0.0], [-a, 0.0, 0.0]]], dtype=torch.float64) + 5.0
    assert particle_sigma(frames) == pytest.approx(a * math.sqrt(2.0 / 3.0), rel=1e-12)
    # i.i.d. N(0, s²) coordinates: E‖x_c‖² = 3(n − 1) s² exactly
    s, n = 0.2, 10
    frames = s * torch.randn(20000, n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert particle_sigma(frames) == pytest.approx(s, rel=0.005)


def test_run_directory_split_keeps_whole_walker_columns(system, run_directory):
    dataset = load_dataset(MolecularDataConfig(SPEC, str(run_directory), validation_fraction=0.25), system)
    frames = torch.from_numpy(mdtraj.load(str(run_directory / "trajectory.dcd"),
                                          top=system.mdtraj_topology).xyz.astype(np.float64)).reshape(5, 4, 22, 3)
    frames = frames - frames.mean(dim=2, keepdim=True)
    assert dataset.validation.shape[0] == 5 and dataset.train.shape[0] == 15
    assert torch.allclose(dataset.validation, frames[:, 3], atol=1e-6)  # the last column, in time order
    assert torch.allclose(dataset.train[:5], frames[:, 0], atol=1e-6)


def test_atom_subset_and_bonds(system, trajectory):
    atoms = (4, 6, 8, 14, 16)
    dataset = load_dataset(MolecularDataConfig(SPEC, str(trajectory), atoms=atoms), system)
    assert dataset.train.shape[1:] == (5, 3)
    assert subset_bonds(system.bonds, np.array(atoms)) == ((0, 1), (1, 2), (2, 3), (3, 4))
    assert subset_bonds(system.bonds, np.array([8, 18, 1])) == ((0, 1), (1, 2))  # no bonds: a chain
    with pytest.raises(BoltzclfError, match="data.atoms: index 22 out of range"):
        load_dataset(MolecularDataConfig(SPEC, str(trajectory), atoms=(0, 22)), system)


def test_missing_trajectory_is_a_clear_error(system, tmp_path):
    with pytest.raises(BoltzclfError, match="not found"):
        load_dataset(MolecularDataConfig(SPEC, str(tmp_path / "nope.dcd")), system)
    with pytest.raises(BoltzclfError, match="holds no trajectory.dcd"):
        load_dataset(MolecularDataConfig(SPEC, str(tmp_path)), system)


def test_random_rotations_are_proper_and_kabsch_undoes_them():
    generator = torch.Generator().manual_seed(0)
    r = random_rotations(500, generator)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(r.transpose(1, 2) @ r, eye.expand(500, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(500, dtype=torch.float64), atol=1e-12)
    # Haar: E[R] = 0 (a biased sampler, e.g. without the sign fix, is not centred)
    assert r.mean(0).abs().max() < 0.1
    x = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    x = x - x.mean(0)
    rotated = x[None] @ r[:5]
    assert torch.allclose(kabsch_align(rotated, x), x.expand(5, 7, 3), atol=1e-10)


def _pairwise_model(n_atoms: int, bonds, seed: int = 0) -> EnergyModel:
    torch.manual_seed(seed)
    net = PairwisePotential(n_atoms, bonds, hidden=32, n_layers=2, time_dim=16)
    torch.nn.init.normal_(net.mlp.output.weight, std=0.3)  # the zero-initialised layer: make the test non-trivial
    return EnergyModel(net, EDM(), karras_grid(2e-3, 2.0, 8), sigma_data=0.17, event_shape=(n_atoms, 3),
                       particles=True).double()


def test_pairwise_energy_is_rotation_and_translation_invariant_but_not_mirror_symmetric(system):
    model = _pairwise_model(22, [tuple(b) for b in system.bonds.tolist()])
    generator = torch.Generator().manual_seed(3)
    x = torch.as_tensor(system.positions)[None] + 0.02 * torch.randn(6, 22, 3, generator=generator, dtype=torch.float64)
    t = torch.tensor([2e-3, 1e-2, 0.1, 0.3, 1.0, 2.0], dtype=torch.float64)
    r = random_rotations(6, generator)
    shift = torch.randn(6, 1, 3, generator=generator, dtype=torch.float64)
    u = model.energy(t, x)
    assert torch.allclose(model.energy(t, x @ r + shift), u, rtol=1e-10, atol=1e-9)
    score = model.score(t, x)
    assert torch.allclose(model.score(t, x @ r + shift), score @ r, rtol=1e-8, atol=1e-6)
    mirrored = model.energy(t, -x)
    assert (mirrored - u).abs().max() > 1e-3  # the dihedral triple products tell the hands apart


def test_fresh_pairwise_model_is_its_gaussian_base():
    net = PairwisePotential(5, [(0, 1), (1, 2), (2, 3), (3, 4)], hidden=16, n_layers=1, time_dim=8)
    model = EnergyModel(net, EDM(), karras_grid(2e-3, 2.0, 8), 0.17, (5, 3), particles=True).double()
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    t = torch.full((4,), 0.05, dtype=torch.float64)
    v = 0.17 ** 2 + 0.05 ** 2
    xc = x - x.mean(1, keepdim=True)
    expected = -(xc ** 2).sum((1, 2)) / (2 * v) - 0.5 * 12 * math.log(2 * math.pi * v)
    assert torch.allclose(model.log_prob_unnormalised(t, x), expected, rtol=1e-12)


def test_proper_dihedrals_of_a_chain_and_of_alanine_dipeptide(system):
    assert proper_dihedrals(5, [(0, 1), (1, 2), (2, 3), (3, 4)]).tolist() == [[0, 1, 2, 3], [1, 2, 3, 4]]
    quads = proper_dihedrals(22, [tuple(b) for b in system.bonds.tolist()])
    phi, psi = [4, 6, 8, 14], [6, 8, 14, 16]
    listed = {tuple(q) for q in quads.tolist()} | {tuple(reversed(q)) for q in quads.tolist()}
    assert tuple(phi) in listed and tuple(psi) in listed
    omm = {tuple(q) for q in mdtraj.compute_phi(mdtraj.Trajectory(system.positions[None], system.mdtraj_topology))[0]}
    assert tuple(phi) in omm  # the same φ quadruple mdtraj uses


def _experiment(trajectory: Path, steps: int = 10, **loss) -> ExperimentConfig:
    from boltzclf.losses import LossConfig
    return ExperimentConfig(
        data=MolecularDataConfig(SPEC, str(trajectory), validation_fraction=0.2, rotations=True),
        process=ProcessConfig(kind="edm"), grid=GridConfig(kind="karras", n_levels=8, t_min=2e-3, t_max=2.0),
        model=ModelConfig(kind="pairwise", hidden=16, n_layers=1, time_dim=8),
        loss=LossConfig(**(loss or {"kind": "diffclf", "pairs": "adjacent"})),
        training=TrainingConfig(steps=steps, batch_size=8, checkpoint_every=4, log_every=2, ema=0.9))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_molecular_training_kill_and_resume_equals_uninterrupted(trajectory, tmp_path, device):
    device = torch.device(device)
    config = _experiment(trajectory)
    full = train_experiment(config, tmp_path / "full", device)

    def kill(step: int) -> None:
        if step == 7:
            raise Killed

    with pytest.raises(Killed):
        train_experiment(config, tmp_path / "killed", device, on_step=kill)  # last checkpoint: step 4
    resumed = train_experiment(config, tmp_path / "killed", device)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        # CPU: bitwise. CUDA: the pair gathers' backward adds with atomics, so only to round-off
        assert torch.equal(a, b) if device.type == "cpu" else torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
    model, stored = load_trained(tmp_path / "killed", device)  # rebuilt from the checkpoint alone
    assert stored.data.sigma_data > 0 and model.sigma_data == stored.data.sigma_data
    assert torch.equal(model.network.pair_mean, resumed.network.pair_mean)
    frames = load_dataset(stored.data, load_system(SPEC)).validation[:4]
    x = torch.as_tensor(frames, dtype=torch.float32, device=device)
    t = torch.full((4,), 0.01, device=device)
    assert torch.equal(model.energy(t, x), resumed.energy(t, x))


def test_grid_too_narrow_for_the_data_is_a_config_error_naming_sigma(trajectory, tmp_path):
    config = _experiment(trajectory)
    config = dataclasses.replace(config, grid=GridConfig(kind="karras", n_levels=8, t_min=2e-3, t_max=0.05))
    from boltzclf.core.errors import ConfigError
    with pytest.raises(ConfigError, match=r"grid.t_max: .*σ_d = "):
        train_experiment(config, tmp_path / "run", CPU)
    assert not (tmp_path / "run").exists()


def test_train_cli_on_a_trajectory_then_sample_cli(trajectory, tmp_path, capsys):
    import yaml
    spec = {"data": {"system": SPEC, "trajectory": str(trajectory)}, "process": {"kind": "edm"},
            "grid": {"kind": "karras", "n_levels": 8, "t_min": 2e-3, "t_max": 2.0},
            "model": {"kind": "pairwise", "hidden": 16, "n_layers": 1, "time_dim": 8},
            "training": {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "log_every": 2},
            "evaluation": {"n_samples": 16}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(spec))
    assert main(["train", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "run")]) == 0
    assert "val_dsm" in capsys.readouterr().out
    assert main(["sample", str(tmp_path / "run"), "--sampler", "smc", "--n", "16", "--groups", "2",
                 "--out", str(tmp_path / "smc")]) == 0
    samples = np.load(tmp_path / "smc" / "samples.npz")
    assert samples["samples"].shape == (16, 22, 3)
    assert "dF_phi" in (tmp_path / "smc" / "results.json").read_text()
    spec["data"]["atoms"] = [4, 6, 8, 14, 16]
    (tmp_path / "cg.yaml").write_text(yaml.safe_dump(spec))
    assert main(["train", str(tmp_path / "cg.yaml"), "--out", str(tmp_path / "cg")]) == 0
    assert main(["sample", str(tmp_path / "cg"), "--sampler", "smc", "--n", "16", "--groups", "2",
                 "--out", str(tmp_path / "cg_smc")]) == 2
    assert "coarse-grained" in capsys.readouterr().err
    assert not (tmp_path / "cg_smc").exists()
    assert main(["sample", str(tmp_path / "cg"), "--sampler", "langevin", "--target", "model", "--n", "4",
                 "--langevin-steps", "10", "--record-every", "5", "--dt", "0.0005", "--start", "smc",
                 "--start-particles", "16", "--groups", "2", "--out", str(tmp_path / "cg_langevin")]) == 0
    langevin = np.load(tmp_path / "cg_langevin" / "samples.npz")
    assert langevin["samples"].shape == (8, 5, 3)  # 2 recorded frames x 4 walkers, step-major
    clusters = langevin["ancestors"].tolist()  # each walker keeps the SMC lineage it was started from
    assert clusters[:4] == clusters[4:] and all(0 <= c < 16 for c in clusters)


def test_a_run_trained_with_relative_paths_is_sampled_from_another_directory(trajectory, tmp_path):
    import yaml
    spec = {"data": {"system": "systems/alanine_dipeptide_vacuum.yaml", "trajectory": str(trajectory)},
            "process": {"kind": "edm"}, "grid": {"kind": "karras", "n_levels": 8, "t_min": 2e-3, "t_max": 2.0},
            "model": {"kind": "pairwise", "hidden": 16, "n_layers": 1, "time_dim": 8},
            "training": {"steps": 2, "batch_size": 8, "checkpoint_every": 2, "log_every": 2},
            "evaluation": {"n_samples": 16}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(spec))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)  # the system path is relative to the repository
        assert main(["train", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "run")]) == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)  # where systems/... does not exist
        _, config = load_trained(tmp_path / "run", CPU)
        assert config.data.system == str(REPO / "systems" / "alanine_dipeptide_vacuum.yaml")
        assert main(["sample", str(tmp_path / "run"), "--sampler", "smc", "--n", "16", "--groups", "2",
                     "--out", str(tmp_path / "smc")]) == 0
