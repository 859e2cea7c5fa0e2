"""The shipped workflows: every file and preset validates; MOG-40 runs end to end; the full
mode-blindness workflow meets its acceptance thresholds (slow)."""
import json
from pathlib import Path

import pytest

from boltzclf.cli.main import main
from boltzclf.cli.run import load_workflow

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


@pytest.mark.parametrize("name, presets", [("gmm_mode_blindness.yaml", (None, "smoke")),
                                           ("mog40.yaml", (None, "smoke", "paper"))])
def test_shipped_workflows_validate(name, presets):
    for preset in presets:
        config, _ = load_workflow(str(WORKFLOWS / name), preset)
        assert config.methods
    paper, _ = load_workflow(str(WORKFLOWS / "mog40.yaml"), "paper")
    assert paper.experiment.target.dim == 128 and paper.experiment.grid.n_levels == 128


def test_mog40_smoke_run_reports_all_methods_with_mmd(tmp_path):
    out = tmp_path / "mog40"
    assert main(["run", str(WORKFLOWS / "mog40.yaml"), "--out", str(out), "--preset", "smoke", "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"dsm", "ctsm", "diffclf"}
    assert all(isinstance(r["mmd"], float) and isinstance(r["clf_loss"], float) for r in results.values())


@pytest.mark.slow
def test_diffclf_recovers_mode_weights_where_dsm_does_not(tmp_path):
    out = tmp_path / "gmm"
    assert main(["run", str(WORKFLOWS / "gmm_mode_blindness.yaml"), "--out", str(out), "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    dsm, diffclf = results["dsm"], results["diffclf"]
    assert diffclf["mode_weight_error"] <= 0.05
    assert dsm["mode_weight_error"] >= 0.15
    assert diffclf["ess_mean"] > dsm["ess_mean"]
    assert diffclf["clf_loss"] - diffclf["clf_loss_exact"] < 0.05 < dsm["clf_loss"] - dsm["clf_loss_exact"]
