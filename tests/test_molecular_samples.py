"""Metrics of alanine-dipeptide samples: chirality repair, φ/ψ, ΔF with weights, and the workflow's records."""
import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from boltzclf.cli.main import main
from boltzclf.evaluation.molecular_samples import ALDP_BACKBONE, PhiSide, Reference, aldp_angles, chirality, \
    sample_metrics
from boltzclf.forcefield.target import torch_target
from boltzclf.openmm.system import load_system

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def system():
    return load_system(REPO / "systems" / "alanine_dipeptide_implicit.yaml")


def _mdtraj_angles(system, x: np.ndarray) -> np.ndarray:
    traj = mdtraj.Trajectory(x.astype(np.float32), system.mdtraj_topology)
    return np.column_stack([mdtraj.compute_phi(traj)[1][:, 0], mdtraj.compute_psi(traj)[1][:, 0]])


def test_mirror_images_are_detected_and_reflected_back(system):
    rng = np.random.default_rng(0)
    native = system.positions
    x = native[None] + 0.01 * rng.standard_normal((6, 22, 3))
    mirrored = x.copy()
    mirrored[::2] = -mirrored[::2]  # D-alanine: the same energy, φ and ψ of opposite sign
    target = torch_target(system)
    with torch.no_grad():
        assert torch.allclose(target.energy(torch.from_numpy(mirrored)), target.energy(torch.from_numpy(x)), atol=1e-8)
    signs = chirality(torch.from_numpy(mirrored))
    assert (signs[::2] != signs[1::2]).all()
    angles, n_mirrored = aldp_angles(torch.from_numpy(mirrored), np.arange(22), native)
    assert n_mirrored == 3
    np.testing.assert_allclose(angles, _mdtraj_angles(system, x), atol=1e-5)


def test_phi_sides_split_both_hands_as_mdtraj_and_the_phi_sign_estimator_do(system):
    rng = np.random.default_rng(2)
    x = system.positions[None] + 0.08 * rng.standard_normal((400, 22, 3))  # φ all round the circle
    mirrored = x.copy()
    mirrored[::2] = -mirrored[::2]
    native = float(chirality(torch.from_numpy(system.positions)[None])[0])
    hand = np.where(chirality(torch.from_numpy(x)).numpy() == native, 1.0, -1.0)  # this much noise flips some
    phi = _mdtraj_angles(system, x)[:, 0] * hand  # φ read in the native hand (mirror images: −φ)
    assert (phi > 0).sum() > 50 and (phi < 0).sum() > 50 and (hand < 0).sum() > 10
    positive, negative = PhiSide(native, 1), PhiSide(native, -1)
    inside = positive.contains(torch.from_numpy(mirrored)).numpy()
    np.testing.assert_array_equal(inside, phi >= 0)
    np.testing.assert_array_equal(negative.contains(torch.from_numpy(mirrored)).numpy(), ~inside)
    coordinate = positive.coordinate(torch.from_numpy(mirrored)).numpy()
    np.testing.assert_allclose(coordinate, np.sin(phi), atol=1e-5)  # positive inside, in the native hand
    np.testing.assert_allclose(negative.coordinate(torch.from_numpy(mirrored)).numpy(), -coordinate)
    sigma = torch.tensor([2.0, 0.1, 1e-3])
    np.testing.assert_allclose(positive.width(sigma).numpy(), [20.0, 1.0, 0.02])


def test_backbone_bead_angles_equal_the_all_atom_dihedrals(system):
    x = system.positions[None] + 0.02 * np.random.default_rng(1).standard_normal((5, 22, 3))
    beads = torch.from_numpy(x[:, list(ALDP_BACKBONE)])
    angles, n_mirrored = aldp_angles(beads, np.array(ALDP_BACKBONE), system.positions)
    assert n_mirrored == 0
    np.testing.assert_allclose(angles, _mdtraj_angles(system, x), atol=1e-5)


def test_free_energy_difference_with_weights_and_its_error_sign():
    rng = np.random.default_rng(2)
    n = 40000
    phi = np.where(rng.random(n) < 0.25, 1.0, -1.5)  # P(φ > 0) = 1/4
    psi = np.full(n, 2.0)  # 115°: with φ = −1.5 rad (−86°) that is C7eq; φ > 0 is αL
    angles = np.column_stack([phi, psi])
    reference = Reference(angles, None, float(np.log(3.0)), 0.01,
                          {"C7eq": 0.75, "C5": 0.0, "alphaR": 0.0, "alphaL": 0.25, "other": 0.0})
    unweighted = sample_metrics(reference, angles, None, np.arange(n), weighted=False)
    assert unweighted["dF_phi"] == pytest.approx(np.log(3.0), abs=4 * unweighted["dF_phi_se"])
    log_w = np.where(phi > 0, np.log(2.0), 0.0)  # doubles the positive side: ΔF = ln(3/2)
    weighted = sample_metrics(reference, angles, log_w, np.arange(n))
    assert weighted["dF_phi"] == pytest.approx(np.log(1.5), abs=4 * weighted["dF_phi_se"])
    assert weighted["dF_phi_error"] == pytest.approx(weighted["dF_phi"] - np.log(3.0))
    assert weighted["dF_phi_error"] < 0 and weighted["dF_phi_z"] < -10
    # Kish ESS/N of two weight values 2 (share 1/4) and 1: (Σw)²/(NΣw²) = (1.25)² / 1.75
    assert weighted["ess"] == pytest.approx(1.25 ** 2 / 1.75, rel=0.02)
    assert weighted["e_w2"] is None and weighted["pmf_error"] > unweighted["pmf_error"]
    # doubling the αL weight: populations 0.6 / 0.4, a total-variation distance of 0.15 from 0.75 / 0.25
    assert weighted["populations"]["alphaL"]["value"] == pytest.approx(0.4, abs=4 * weighted["populations"]["alphaL"]["se"])
    assert weighted["populations_tv"] == pytest.approx(0.15, abs=0.02)
    assert unweighted["populations_tv"] < 0.02
    # non-finite weights are dropped together with their angles and clusters, and counted
    broken = log_w.copy()
    broken[:1000] = -np.inf
    kept = sample_metrics(reference, angles, broken, np.arange(n) // 4)
    alone = sample_metrics(reference, angles[1000:], log_w[1000:], np.arange(1000, n) // 4)
    assert kept["n_nonfinite_weights"] == 1000 and kept["dF_phi"] == pytest.approx(alone["dF_phi"])
    assert kept["n_clusters"] == (n - 1000) // 4 and kept["dF_phi_se"] == pytest.approx(alone["dF_phi_se"])
    assert sample_metrics(reference, angles, None, np.zeros(n, dtype=int), weighted=False)["ess"] is None
    # independent frames: n_eff/N of the populations is ~1 (a correlated-chain or weight bug would not be)
    assert 0.8 < unweighted["ess"] <= 1.2


@pytest.fixture(scope="module")
def workflow_smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bg") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        assert main(["run", "workflows/aldp_boltzmann_generator.yaml", "--preset", "smoke", "--out", str(out),
                     "--device", "cpu"]) == 0
    return out


KEYS = {"ess", "e_w2", "t_w2", "dF_phi", "dF_phi_se", "dF_phi_error", "pmf_error", "wall_s", "n_model_evals",
        "n_energy_evals", "populations_tv", "n_clusters"}


def test_workflow_smoke_writes_every_record(workflow_smoke):
    results = json.loads((workflow_smoke / "results.json").read_text())
    reference = json.loads((workflow_smoke / "reference" / "results.json").read_text())
    assert results["reference"]["dF_phi"] == reference["delta_f_phi_positive_vs_negative"]["value_kT"]
    assert results["reference"]["frames"] == reference["frames_at_target_temperature"]
    for method in ("dsm", "diffclf"):
        assert "learned_dF_phi" in results[method] and "learned_populations_tv" in results[method]
        for sampler in ("smc", "reweighting", "langevin", "cg_langevin"):
            assert KEYS <= set(results[method][sampler]), (method, sampler)
        assert results[method]["cg_langevin"]["e_w2"] is None  # no true coarse-grained energy
        assert results[method]["smc"]["n_energy_evals"] > 0
        sides = results[method]["smc"]["sides"]  # ΔF_φ of smc: the two confined walks'
        assert results[method]["smc"]["dF_phi"] == pytest.approx(
            sides["phi_negative"]["log_z"] - sides["phi_positive"]["log_z"])
        assert results[method]["smc"]["n_energy_evals"] == results[method]["smc"]["diagnostics"]["n_target_evals"] \
            + sides["phi_positive"]["n_target_evals"] + sides["phi_negative"]["n_target_evals"]
        learned = results[method]["learned_sides"]
        assert results[method]["learned_dF_phi"] == pytest.approx(
            learned["phi_negative"]["log_z"] - learned["phi_positive"]["log_z"])
    for name in ("report.png", "report.md"):
        assert (workflow_smoke / name).stat().st_size > 0


def test_workflow_records_match_their_saved_samples(workflow_smoke):
    results = json.loads((workflow_smoke / "results.json").read_text())
    for sampler, weighted in (("smc", True), ("langevin", False)):
        saved = np.load(workflow_smoke / "diffclf" / f"{sampler}.npz")
        w = np.exp(saved["log_w"] - saved["log_w"].max()) if weighted else np.ones(len(saved["log_w"]))
        wrapped = (saved["angles"][:, 0] + np.pi) % (2 * np.pi) - np.pi
        positive = w[wrapped >= 0].sum()
        expected = -np.log(positive / w[wrapped < 0].sum()) if positive > 0 else np.inf
        recorded = results["diffclf"][sampler]["dF_phi_particles" if weighted else "dF_phi"]
        assert recorded == pytest.approx(expected) if np.isfinite(expected) else recorded is None  # JSON null


def test_workflow_resumes_without_redoing_anything(workflow_smoke):
    before = {p: p.stat().st_mtime_ns for p in workflow_smoke.rglob("*.json") if p.name != "results.json"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        assert main(["run", "workflows/aldp_boltzmann_generator.yaml", "--preset", "smoke", "--out",
                     str(workflow_smoke), "--device", "cpu"]) == 0
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before


def test_workflow_with_the_gpu_presets_egnn_runs_end_to_end(workflow_smoke, tmp_path):
    """The gpu preset's network (EGNN, reflection-symmetric) through training, SMC and the metrics, at smoke size."""
    import yaml

    from boltzclf.cli.run import load_workflow

    data = yaml.safe_load((REPO / "workflows" / "aldp_boltzmann_generator.yaml").read_text())
    data["presets"]["smoke"]["reference"] = {"run": str(workflow_smoke / "reference"), "preset": None,
                                             "workflow": None}
    data["presets"]["smoke"]["experiment"]["model"] = {"kind": "egnn", "hidden": 8, "n_layers": 1, "time_dim": 8}
    data["presets"]["smoke"]["sampling"]["samplers"] = ["smc", "langevin"]
    data.pop("coarse_grained"), data.pop("cg_pretrain"), data["presets"]["smoke"].pop("coarse_grained"), \
        data["presets"]["smoke"].pop("cg_pretrain")
    path = tmp_path / "egnn.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        config, runner = load_workflow(str(path), "smoke")
        assert config.experiment.model.kind == "egnn"
        results = runner(config, tmp_path / "out", torch.device("cpu"))
    assert set(results["diffclf"]) >= {"smc", "langevin", "learned_dF_phi"}
    assert results["diffclf"]["smc"]["n"] == 32


def test_missing_reference_run_is_refused_before_the_output_exists(tmp_path, capsys):
    import yaml

    data = yaml.safe_load((REPO / "workflows" / "aldp_boltzmann_generator.yaml").read_text())
    data["reference"] = {"run": str(tmp_path / "no_such_run")}
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "reference.run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sampler_options_put_the_mala_moves_where_each_walk_needs_them():
    from boltzclf.pipelines.boltzmann_generator import SamplerOptions
    options = SamplerOptions(bridge_levels=8, mcmc_steps=3)
    bridge_only = options.sample_config("smc")
    assert (bridge_only.mcmc_steps, bridge_only.mcmc_on_path) == (3, False)
    on_path = SamplerOptions(bridge_levels=8, mcmc_steps=3, mcmc_on_path=True).sample_config("smc")
    assert (on_path.mcmc_steps, on_path.mcmc_on_path, on_path.bridge_levels) == (3, True, 8)
    own_levels = options.sample_config("smc", target="model")  # the learned density's populations: no moves
    assert (own_levels.mcmc_steps, own_levels.bridge_levels) == (0, 0)
    for target in ("exact", "model"):  # a confined walk moves at every level, whatever mcmc_on_path says
        confined = options.sample_config("smc", target=target, confined=True)
        assert confined.mcmc_steps == 3 and confined.mcmc_on_path == (target == "exact")
    no_bridge = SamplerOptions(bridge_levels=0, mcmc_steps=3, mcmc_on_path=True).sample_config("smc")
    assert (no_bridge.mcmc_steps, no_bridge.mcmc_on_path) == (3, False)  # without a bridge: at every level anyway


def test_an_smc_record_with_an_undefined_side_keeps_its_other_entries():
    from boltzclf.pipelines.phi_sides import with_sides
    reference = Reference(np.zeros((1, 2)), None, 5.0, 0.3, {})
    record = {"dF_phi": None, "dF_phi_se": None, "wall_s": 1.0, "n_model_evals": 10, "n_energy_evals": 2}
    sides = {"dF_phi": 6.0, "dF_phi_se": 0.4, "wall_s": 2.0, "n_model_evals": 5, "n_target_evals": 3}
    merged = with_sides(record, sides, reference)
    assert merged["dF_phi_error"] == pytest.approx(1.0) and merged["dF_phi_z"] == pytest.approx(2.0)
    assert (merged["wall_s"], merged["n_model_evals"], merged["n_energy_evals"]) == (3.0, 15, 5)
    for value, se in ((None, None), (6.0, None)):  # a side whose Ẑ is 0, or a single group (no SE): JSON null
        merged = with_sides(record, {**sides, "dF_phi": value, "dF_phi_se": se}, reference)
        assert merged["dF_phi_error"] is None and merged["dF_phi_z"] is None
