"""``boltzclf simulate --engine torch``: batched walkers and replica exchange on the torch force field.

Output readable by mdtraj with energies equal to OpenMM's re-evaluation, exact resume after a kill,
refusals of bad input, non-finite walkers reported, and the same Langevin process as OpenMM's.
"""
import contextlib
import math

import mdtraj
import numpy as np
import pytest
import torch
from openmm_testdata import SYSTEMS_DIR, assert_stored_energies_match, kill_boltzclf_when, load_run

from boltzclf.cli.main import main
from boltzclf.core import rundir
from boltzclf.core.provenance import sha256
from boltzclf.dynamics.config import BatchedMDConfig
from boltzclf.dynamics.engine import build_simulation, finish, run_segments
from boltzclf.dynamics.output import load_frames
from boltzclf.openmm import load_system
from boltzclf.openmm.md_config import MDConfig
from boltzclf.openmm.simulate import simulate as simulate_openmm

SPEC = SYSTEMS_DIR / "alanine_dipeptide_implicit.yaml"
FAST = ["--engine", "torch", "--threads", "1", "--equilibration-ps", "0.1", "--stride-ps", "0.05",
        "--no-compile", "--dtype", "float64", "--no-progress"]
REMD = ["--walkers", "4", "--replicas", "3", "--max-temperature", "450", "--exchange-ps", "0.05"]


def simulate(out, ns="0.0015", *extra):
    return main(["simulate", str(SPEC), "--out", str(out), "--ns", ns, *FAST, *extra])


@pytest.fixture(scope="module")
def remd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("batched") / "run"
    assert simulate(out, "0.0015", *REMD, "--checkpoint-frames", "10", "--save-all-temperatures") == 0
    return out


def test_output_opens_with_mdtraj_time_major(remd_run):
    traj = load_run(remd_run)
    assert traj.n_frames == 30 * 4 and traj.n_atoms == 22
    energies = np.load(remd_run / "energies.npz")
    assert energies["reduced_energy"].shape == (30, 4)
    assert energies["potential_energy"].shape == (30, 3, 4) and energies["labels"].shape == (30, 3, 4)
    np.testing.assert_allclose(energies["time_ps"], 0.05 * np.arange(1, 31), rtol=1e-12)
    np.testing.assert_allclose(energies["temperatures_K"], [300.0, 300.0 * 1.5 ** 0.5, 450.0], rtol=1e-12)
    frames = load_frames(remd_run)
    assert frames.shape == (30, 4, 22, 3)
    np.testing.assert_array_equal(frames[3, 2], traj.xyz[3 * 4 + 2])
    slot = mdtraj.load(str(remd_run / "slots" / "slot_02.dcd"), top=str(remd_run / "topology.pdb"))
    assert slot.n_frames == 120


def test_stored_energies_match_openmm_reevaluation(remd_run):
    assert_stored_energies_match(remd_run, SPEC)


def test_every_slot_potential_matches_its_frames(remd_run):
    """The hottest slot's frames and potential energies [kJ/mol] agree with OpenMM."""
    system = load_system(SPEC)
    slot = mdtraj.load(str(remd_run / "slots" / "slot_02.dcd"), top=str(remd_run / "topology.pdb"))
    stored = np.load(remd_run / "energies.npz")["potential_energy"][:, 2].ravel()
    reevaluated = system.energy(torch.from_numpy(slot.xyz.astype(np.float64))).numpy() * system.kT
    np.testing.assert_allclose(reevaluated, stored, rtol=1e-4, atol=0.05)
    system.close()


def test_results_report_exchanges_round_trips_and_provenance(remd_run):
    import json

    results = json.loads((remd_run / "results.json").read_text())
    exchange = results["replica_exchange"]
    assert exchange["exchange_attempts"] == 32  # 0.1 ps equilibration + 1.5 ps, every 0.05 ps
    assert all(0.0 < rate <= 1.0 for rate in exchange["acceptance_per_pair"])
    assert results["n_nonfinite"] == 0 and results["stopped_walkers"] == []
    assert results["walkers"] == 4 and results["replicas"] == 3 and results["engine"] == "torch"
    assert set(results["checksums_sha256"]) >= {"trajectory.dcd", "topology.pdb", "energies.npz"}
    assert results["checksums_sha256"]["trajectory.dcd"] == sha256(remd_run / "trajectory.dcd")
    assert results["software"]["torch"] and results["memory"]["process_peak_rss_mib"] > 0


def test_killed_replica_exchange_resumes_to_exactly_the_uninterrupted_frames(tmp_path):
    args = ["0.0015", *REMD, "--checkpoint-frames", "5", "--equilibration-ps", "0"]
    assert simulate(tmp_path / "full", *args) == 0
    killed = tmp_path / "killed"
    # the flag order simulate() uses (later flags win)
    kill_boltzclf_when(["simulate", str(SPEC), "--out", str(killed), "--ns", args[0], *FAST, *args[1:]],
                       killed / "chunks" / "chunk_00002.pt", killed)
    assert simulate(killed, *args) == 0
    np.testing.assert_array_equal(load_run(killed).xyz, load_run(tmp_path / "full").xyz)
    full, resumed = np.load(tmp_path / "full" / "energies.npz"), np.load(killed / "energies.npz")
    for name in ("potential_energy", "labels", "kinetic"):
        np.testing.assert_array_equal(resumed[name], full[name])


def test_run_killed_between_chunk_and_checkpoint_resumes_exactly(tmp_path, monkeypatch):
    """The harshest moment: a chunk written, its checkpoint not. Plain batched dynamics (one temperature)."""
    from boltzclf.dynamics import engine

    args = ["0.001", "--walkers", "3", "--checkpoint-frames", "10"]
    assert simulate(tmp_path / "full", *args) == 0
    saves = {"n": 0}
    original = engine.save_checkpoint

    def dies_on_third_checkpoint(out, sim):
        saves["n"] += 1
        if saves["n"] == 3:  # initial state, equilibration, chunk 0; die before chunk 1's checkpoint
            raise KeyboardInterrupt
        original(out, sim)

    monkeypatch.setattr(engine, "save_checkpoint", dies_on_third_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        simulate(tmp_path / "killed", *args)
    monkeypatch.setattr(engine, "save_checkpoint", original)
    assert (tmp_path / "killed" / "chunks" / "chunk_00000.pt").exists()
    assert simulate(tmp_path / "killed", *args) == 0
    np.testing.assert_array_equal(load_run(tmp_path / "killed").xyz, load_run(tmp_path / "full").xyz)


def test_same_seed_same_frames_other_seed_other_frames(tmp_path):
    args = ["0.0003", "--walkers", "2", "--checkpoint-frames", "10"]
    assert simulate(tmp_path / "a", *args) == 0
    assert simulate(tmp_path / "b", *args) == 0
    assert simulate(tmp_path / "c", *args, "--seed", "1") == 0
    np.testing.assert_array_equal(load_run(tmp_path / "a").xyz, load_run(tmp_path / "b").xyz)
    assert not np.array_equal(load_run(tmp_path / "a").xyz, load_run(tmp_path / "c").xyz)


@pytest.mark.parametrize("extra, message", [
    (["--walkers", "0"], "walkers (--walkers): must be >= 1"),
    (["--replicas", "3"], "--max-temperature"),
    (["--max-temperature", "400"], "max_temperature (--max-temperature): is only used by replica exchange"),
    (["--replicas", "2", "--max-temperature", "400", "--exchange-ps", "0.03"], "--exchange-ps"),
    (["--dtype", "float16"], "float16"),
    (["--temperature", "0"], "temperature (--temperature): must be positive"),
    (["--stride-ps", "0"], "stride_ps (--stride-ps): must be positive"),
    (["--checkpoint-frames", "0"], "checkpoint_frames (--checkpoint-frames): must be >= 1"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "CUDA is not available")]))
def test_bad_options_exit_2_and_create_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) if "float16" in extra else contextlib.nullcontext():
        assert simulate(out, "0.001", *extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_corrupt_checkpoint_is_named_and_other_configs_refused(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["0.0002", "--walkers", "2"]
    assert simulate(out, *args) == 0
    before = {p.name: sha256(p) for p in out.iterdir() if p.is_file()}
    assert simulate(out, *args, "--seed", "3") == 2
    assert "different config" in capsys.readouterr().err
    assert before == {p.name: sha256(p) for p in out.iterdir() if p.is_file()}
    (out / "results.json").unlink()
    (out / "checkpoint.pt").write_bytes(b"garbage")
    assert simulate(out, *args) == 2
    assert "checkpoint.pt: cannot resume" in capsys.readouterr().err


class PoisonedTarget:
    """The torch target, but walker ``bad`` gets a NaN force in the ``after``-th evaluation."""

    def __init__(self, target, bad: int, after: int):
        self.target, self.bad, self.after, self.calls = target, bad, after, 0

    def energy_and_force(self, x):
        self.calls += 1
        energy, force = self.target.energy_and_force(x)
        if self.calls == self.after:
            force = force.clone()
            force[self.bad] = math.nan
        return energy, force


def test_non_finite_walkers_are_stopped_counted_and_reported(tmp_path):
    system = load_system(SPEC)
    config = BatchedMDConfig(ns=0.001, temperature=300.0, walkers=3, replicas=2, max_temperature=400.0,
                             stride_ps=0.05, exchange_ps=0.05, equilibration_ps=0.0, compiled=False,
                             dtype="float64", checkpoint_frames=10)
    out = rundir.prepare(tmp_path / "run", {"test": 1}, seed=0, device="cpu")
    sim = build_simulation(system, config)
    sim.target = PoisonedTarget(sim.target, bad=4, after=300)
    run_segments(sim, out, progress=False)
    results = finish(system, sim, out)
    assert results["n_nonfinite"] == 1
    assert len(results["stopped_walkers"]) == 1
    assert np.isfinite(results["kinetic_temperature_K"]).all()  # the stopped walker's NaN velocities are left out


@pytest.mark.slow  # 60-90 s on 2 cores
def test_batched_dynamics_follow_the_same_langevin_process_as_openmm(tmp_path):
    """Matched protocol: both engines start at the minimised structure with 300 K velocities, run
    1 ps of friction-5/ps Langevin dynamics and record 2 ps. The torch engine's walkers and 24
    independent OpenMM runs must agree on the mean reduced energy, its spread and the φ/ψ statistics
    (C5/β fraction, mean φ) within 4 standard errors (independent walkers/runs as the samples)."""
    torch.set_num_threads(1)
    walkers, runs = 64, 24
    assert simulate(tmp_path / "torch", "0.002", "--walkers", str(walkers), "--equilibration-ps", "1.0",
                    "--friction", "5", "--dtype", "float32", "--stride-ps", "0.1") == 0
    torch_frames = load_run(tmp_path / "torch")
    torch_u = np.load(tmp_path / "torch" / "energies.npz")["reduced_energy"]  # (20, W)
    system = load_system(SPEC)
    openmm_u, openmm_traj = [], []
    for seed in range(runs):
        config = MDConfig(ns=0.002, temperature=300.0, friction_per_ps=5.0, stride_ps=0.1, seed=seed,
                          equilibration_ps=1.0, threads=1)
        out = rundir.prepare(tmp_path / f"openmm{seed}", {"seed": seed}, seed=seed, device="CPU")
        simulate_openmm(system, config, out, progress=False)
        openmm_u.append(np.load(out / "energies.npz")["reduced_energy"])
        openmm_traj.append(load_run(out))
    system.close()

    def per_run(values_by_run):  # per-run means -> (mean, standard error)
        v = np.asarray(values_by_run)
        return v.mean(), v.std(ddof=1) / math.sqrt(len(v))

    def phi_psi(traj):
        return mdtraj.compute_phi(traj)[1][:, 0], mdtraj.compute_psi(traj)[1][:, 0]

    t_phi, t_psi = (a.reshape(20, walkers) for a in phi_psi(torch_frames))
    o = [phi_psi(traj) for traj in openmm_traj]
    observables = {
        "mean reduced energy": (torch_u.mean(0), [u.mean() for u in openmm_u]),
        "energy spread": (torch_u.std(0), [u.std() for u in openmm_u]),
        "C5/beta fraction": ((t_psi > 2.0).mean(0), [(psi > 2.0).mean() for _, psi in o]),
        "mean phi": (t_phi.mean(0), [phi.mean() for phi, _ in o]),
    }
    for name, (torch_values, openmm_values) in observables.items():
        (a, sa), (b, sb) = per_run(torch_values), per_run(openmm_values)
        z = (a - b) / math.hypot(sa, sb)
        assert abs(z) <= 4.0, f"{name}: torch {a:.3f} ± {sa:.3f}, OpenMM {b:.3f} ± {sb:.3f} (z = {z:.1f})"


@pytest.mark.slow
def test_replica_exchange_ensemble_matches_a_long_openmm_run(tmp_path):
    """Stationary comparison (about 15 min on one core): 1 ns of OpenMM LangevinMiddle MD against
    torch replica exchange (64 columns x 4 temperatures, 50 ps per walker after 20 ps equilibration,
    float32, compiled). The C7eq / C5 / αR populations and the mean and spread of the reduced energy
    must agree within 4 combined standard errors (correlated-frame errors for both)."""
    from boltzclf.estimators.populations import basin_populations
    from boltzclf.estimators.weighted import clustered_mean

    assert main(["simulate", str(SPEC), "--out", str(tmp_path / "torch"), "--ns", "0.05", "--engine", "torch",
                 "--walkers", "64", "--replicas", "4", "--max-temperature", "600", "--equilibration-ps", "20",
                 "--stride-ps", "0.5", "--threads", "1", "--no-progress"]) == 0
    assert main(["simulate", str(SPEC), "--out", str(tmp_path / "openmm"), "--ns", "1.0", "--stride-ps", "0.5",
                 "--threads", "1", "--no-progress"]) == 0

    def angles(out, walkers):
        traj = load_run(out)
        phi = mdtraj.compute_phi(traj)[1][:, 0].reshape(-1, walkers).T
        psi = mdtraj.compute_psi(traj)[1][:, 0].reshape(-1, walkers).T
        u = np.load(out / "energies.npz")["reduced_energy"].reshape(-1, walkers).T
        return phi, psi, u

    def energy_moments(u):  # mean and mean square with block clusters of 20 frames per walker
        blocks = (np.arange(u.shape[1]) // 20)[None, :] + 1000 * np.arange(u.shape[0])[:, None]
        return [clustered_mean(torch.from_numpy(v.ravel()), torch.from_numpy(blocks.ravel()))
                for v in (u, u * u)]

    t_phi, t_psi, t_u = angles(tmp_path / "torch", 64)
    o_phi, o_psi, o_u = angles(tmp_path / "openmm", 1)
    t_pop, o_pop = basin_populations(t_phi, t_psi), basin_populations(o_phi, o_psi)
    for k, name in enumerate(t_pop.names[:3]):
        a, sa = float(t_pop.estimate.value[k]), float(t_pop.estimate.se[k])
        b, sb = float(o_pop.estimate.value[k]), float(o_pop.estimate.se[k])
        assert abs(a - b) <= 4 * math.hypot(sa, sb), f"{name}: torch {a:.3f} ± {sa:.3f}, OpenMM {b:.3f} ± {sb:.3f}"
    for label, t_est, o_est in zip(("<u>", "<u²>"), energy_moments(t_u), energy_moments(o_u)):
        a, sa, b, sb = float(t_est.value), float(t_est.se), float(o_est.value), float(o_est.se)
        assert abs(a - b) <= 4 * math.hypot(sa, sb), f"{label}: torch {a:.2f} ± {sa:.2f}, OpenMM {b:.2f} ± {sb:.2f}"


@pytest.mark.gpu
def test_batched_dynamics_on_cuda_are_reproducible_and_match_openmm(tmp_path):
    """CUDA, float32, compiled, 256 walkers x 2 temperatures: energies of the written frames agree
    with OpenMM (float32 arithmetic: 1e-4 relative plus storage). Not bitwise reproducible on CUDA
    (the force's backward sums with atomics), so two runs with one seed are only compared for their
    first frame, before the trajectories can diverge measurably."""
    args = ["0.001", "--walkers", "256", "--replicas", "2", "--max-temperature", "400", "--device", "cuda",
            "--dtype", "float32", "--exchange-ps", "0.05"]
    base = ["--engine", "torch", "--equilibration-ps", "0.1", "--stride-ps", "0.05", "--no-progress"]
    for name in ("a", "b"):
        assert main(["simulate", str(SPEC), "--out", str(tmp_path / name), "--ns", *args, *base]) == 0
    first = [load_run(tmp_path / name).xyz[:256] for name in ("a", "b")]
    np.testing.assert_allclose(first[0], first[1], atol=1e-3)
    system = load_system(SPEC)
    x = torch.from_numpy(load_run(tmp_path / "a").xyz.astype(np.float64))
    stored = np.load(tmp_path / "a" / "energies.npz")["reduced_energy"].ravel()
    np.testing.assert_allclose(system.energy(x).numpy(), stored, rtol=1e-4, atol=0.05)
    system.close()


def test_constrained_system_is_refused_before_anything_is_written(tmp_path, capsys):
    spec = tmp_path / "constrained.yaml"
    spec.write_text((SPEC.read_text()).replace("constraints: none", "constraints: HBonds"))
    out = tmp_path / "out"
    assert main(["simulate", str(spec), "--out", str(out), "--ns", "0.001", *FAST]) == 2
    assert "constraints" in capsys.readouterr().err
    assert not out.exists()
