"""The solvation workflow end to end (smoke preset): every estimator's record for both named paths, the
reports, resuming, and refusal of inputs that define no solvation free energy."""
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from boltzclf.cli.main import main
from boltzclf.estimators.estimate import GAS_CONSTANT_KJ_PER_MOL_K, KJ_PER_KCAL
from boltzclf.estimators.importance import log_normaliser
from boltzclf.pipelines.solvation_learned import EndAnnealing, _end_log_ratios

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = "workflows/aldp_solvation.yaml"
ESTIMATORS = ("mbar", "ti", "bar", "fep", "learned_ti_dsm", "learned_ti_diffclf", "learned_ti_diffclf_ends",
              "learned_classes_diffclf_ends", "learned_smc_dsm", "learned_smc_diffclf", "learned_smc_diffclf_ends")
FIELDS = ("dF_kT", "se_kT", "dF_kJ_mol", "dF_kcal_mol", "n_samples", "n_energy_evaluations", "wall_s")


def _run(out: Path, workflow: str = WORKFLOW) -> int:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        return main(["run", workflow, "--preset", "smoke", "--out", str(out), "--device", "cpu"])


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("solvation") / "run"
    assert _run(out) == 0
    return out


def test_every_path_and_estimator_has_a_complete_record(smoke):
    results = json.loads((smoke / "results.json").read_text())
    kT = GAS_CONSTANT_KJ_PER_MOL_K * 300.0
    for path in ("gb_charges", "full_gb"):
        assert "λ = 0" in results[path]["meaning"]
        for name in ESTIMATORS:
            record = results[path][name]
            assert all(record[key] is not None for key in FIELDS), (path, name)
            assert record["dF_kJ_mol"] == pytest.approx(record["dF_kT"] * kT)
            assert record["dF_kcal_mol"] == pytest.approx(record["dF_kT"] * kT / KJ_PER_KCAL)
            assert record["se_kT"] > 0 and record["n_samples"] > 0 and record["n_energy_evaluations"] > 0
        diag = results["diagnostics"][path]
        assert diag["mbar_converged"] and len(diag["overlap_matrix"]) == 3
    # solvation is favourable on both paths, and the surface-area term the gb_charges end keeps is
    # unfavourable, so switching the charges alone releases more: ΔF(gb_charges) > ΔF(full_gb) by kT's
    charges, full = results["gb_charges"]["mbar"], results["full_gb"]["mbar"]
    assert full["dF_kT"] > 15 and charges["dF_kT"] - full["dF_kT"] > 3
    assert (smoke / "report.png").stat().st_size > 0
    report = (smoke / "report.md").read_text()
    assert "| mbar |" in report and "## full_gb" in report and "MBAR converged: True" in report


def test_rerunning_resumes_without_redoing_anything(smoke):
    before = json.loads((smoke / "results.json").read_text())
    stamps = {p: p.stat().st_mtime_ns for p in smoke.rglob("checkpoint.pt")}
    assert _run(smoke) == 0
    after = json.loads((smoke / "results.json").read_text())
    for path in ("gb_charges", "full_gb"):
        for name in ESTIMATORS:
            assert after[path][name]["dF_kT"] == before[path][name]["dF_kT"]
    assert stamps and all(p.stat().st_mtime_ns == t for p, t in stamps.items())


@pytest.mark.parametrize("change, message", [
    ({"system": "systems/alanine_dipeptide_vacuum.yaml"}, "has no implicit-solvent force"),
    ({"windows": {"full_gb": [0.0, 0.5, 1.5]}}, r"windows.full_gb: every λ must lie in \[0, 1\]"),
    ({"windows": {"full_gb": [0.0, 0.5]}}, "windows.full_gb: the windows must include both end states"),
    ({"windows": {"gb_scale": [0.0, 1.0]}}, "windows.gb_scale: is not a solvation path"),
])
def test_bad_input_is_refused_before_the_output_exists(tmp_path, capsys, change, message):
    data = yaml.safe_load((REPO / WORKFLOW).read_text())
    data.update(change)
    data.pop("learned")
    data["presets"]["smoke"].pop("windows")
    data["presets"]["smoke"].pop("learned")
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    assert _run(tmp_path / "out", str(path)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_the_gpu_presets_egnn_trains_on_the_interpolant(tmp_path):
    from boltzclf.cli.run import load_workflow

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        config, runner = load_workflow(WORKFLOW, "gpu")
        assert config.learned.experiment.model.kind == "egnn" and config.dynamics.walkers == 128
        data = yaml.safe_load((REPO / WORKFLOW).read_text())
        data["presets"]["smoke"]["learned"]["experiment"]["model"] = {"kind": "egnn", "hidden": 8, "n_layers": 1}
        data["presets"]["smoke"]["windows"] = {"full_gb": [0.0, 0.5, 1.0]}
        path = tmp_path / "wf.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        out = tmp_path / "out"
        assert _run(out, str(path)) == 0
    record = json.loads((out / "results.json").read_text())["full_gb"]["learned_ti_diffclf"]
    assert record["se_kT"] > 0 and record["n_energy_evaluations"] > 0


def test_end_corrections_anneal_from_the_true_end_density_to_the_learned_level():
    """E[exp w] = Z_θ(t)/Z_end: learned energy |x|²/(2s²), true energy |x|²/2 in d = 3, ratio s³."""
    scale = 0.7
    model = SimpleNamespace(levels=torch.tensor([0.01, 0.5]), centre=lambda x: x,
                            energy=lambda t, x: x.pow(2).sum(1) / (2 * scale ** 2))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 3, generator=generator)
    result = _end_log_ratios(model, 0, x, lambda y: 0.5 * y.pow(2).sum(1), EndAnnealing(64, 2, 0.3), generator)
    estimate = log_normaliser(result.log_weights)  # ln mean exp w ± delta-method SE
    assert abs(float(estimate.value) - 3 * math.log(scale)) <= 3 * float(estimate.se)  # reversed: −3 ln s
