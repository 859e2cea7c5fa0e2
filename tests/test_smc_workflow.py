"""The ``smc_comparison`` workflow (workflows/gmm_smc.yaml): smoke run end to end, resume, validation."""
import json
from pathlib import Path

import pytest

from boltzclf.cli.main import EXIT_USER_ERROR, main

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "gmm_smc.yaml"
KEYS = ("ess_final", "ess_min", "log_z_error", "log_z_se", "mode_weight_error", "mmd")


def test_smoke_run_reports_every_target_method_and_composition(tmp_path):
    out = tmp_path / "smc"
    assert main(["run", str(WORKFLOW), "--out", str(out), "--preset", "smoke", "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"two_modes", "mog40", "composition"}
    for target in ("two_modes", "mog40"):
        for method in ("dsm", "diffclf"):
            record = results[target][method]
            assert all(isinstance(record[key], float) for key in KEYS), record
            assert 0 < record["ess_final"] <= 1 and record["log_z_error"] == abs(record["log_z"])
    for method in ("dsm", "diffclf"):
        product, mixture = results["composition"][method]["product"], results["composition"][method]["mixture"]
        assert abs(sum(product["mode_weights_exact"]) - 1) < 1e-9 and mixture["log_z_exact"] == 0.0
        # the exact 1:1 mixture of a 2:1 and a 1:4 two-mode mixture: four modes (1/3, 1/6, 1/10, 2/5)
        assert sorted(round(w, 6) for w in mixture["mode_weights_exact"]) == [0.1, 0.166667, 0.333333, 0.4]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # mog40's methods warm-start from one shared pre-training run; two_modes trains from scratch
    pre = out / "mog40" / "pretrain" / "checkpoint.pt"
    for method in ("dsm", "diffclf"):
        config = json.loads((out / "mog40" / method / "config.json").read_text())
        assert config["training"]["warm_start"] == str(pre)
        assert results["mog40"][method]["steps"] == {"pretrain": 5, "method": 10, "total": 15}
        assert results["two_modes"][method]["steps"]["pretrain"] == 0
        assert results["mog40"][method]["modes_empty"] >= 0 and results["mog40"][method]["mode_weight_error_noise"] > 0
    before = (out / "mog40" / "diffclf" / "smc.json").stat().st_mtime_ns
    assert main(["run", str(WORKFLOW), "--out", str(out), "--preset", "smoke", "--device", "cpu"]) == 0
    assert (out / "mog40" / "diffclf" / "smc.json").stat().st_mtime_ns == before
    assert json.loads((out / "results.json").read_text()) == results


def test_composition_must_name_a_target(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(WORKFLOW.read_text().replace("base: two_modes", "base: three_modes"))
    assert main(["run", str(bad), "--out", str(tmp_path / "o"), "--preset", "smoke"]) == EXIT_USER_ERROR
    assert "composition.base" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("old, new, key", [
    ("pretrain:\n  mog40:", "pretrain:\n  mog41:", "pretrain.mog41"),
    ("pretrain:\n  mog40:", "pretrain:\n  two_modes: {steps: 5}\n  mog40:", "composition.base"),
    ("methods:\n", "methods:\n  pretrain: {kind: dsm}\n", "methods.pretrain"),
])
def test_pretrain_must_name_a_target_other_than_the_composition_base(tmp_path, capsys, old, new, key):
    bad = tmp_path / "bad.yaml"
    assert old in WORKFLOW.read_text()
    bad.write_text(WORKFLOW.read_text().replace(old, new, 1))
    assert main(["run", str(bad), "--out", str(tmp_path / "o"), "--preset", "smoke"]) == EXIT_USER_ERROR
    assert key in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
