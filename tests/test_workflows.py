"""The shipped workflows: every file and preset validates; MOG-40 runs end to end; the full
mode-blindness workflow meets its acceptance thresholds (slow)."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from boltzclf.cli.main import main
from boltzclf.cli.run import load_workflow
from boltzclf.core import rundir
from boltzclf.core.config import from_mapping, to_dict
from boltzclf.core.errors import ConfigError
from boltzclf.pipelines import compare
from boltzclf.training import checkpoint

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


def _tiny_workflow(**changes) -> dict:
    data = {
        "workflow": "compare_losses",
        "experiment": {
            "target": {"name": "two_modes", "dim": 2},
            "grid": {"n_levels": 8},
            "model": {"hidden": 16, "n_layers": 1, "time_dim": 8},
            "training": {"steps": 1, "batch_size": 32, "lr": 1.0e-9, "ema": 0.9, "dataset_size": 256},
            "evaluation": {"n_samples": 64, "n_levels": 2},
        },
        "methods": {"dsm": {"kind": "dsm"}, "diffclf": {"kind": "diffclf"}},
        "pretrain": {"steps": 4, "lr": 1.0e-2},
    }
    data.update(changes)
    return data


@pytest.mark.parametrize("changes, key", [
    ({"pretrain": {"steps": 0}}, "pretrain.steps"),
    ({"pretrain": {"steps": 4, "lr": -1.0}}, "pretrain.lr"),
    ({"pretrain": {"steps": 4, "loss": {"kind": "sm"}}}, "pretrain.loss.kind"),
    ({"pretrain": {"steps": 4, "epochs": 2}}, "pretrain"),
    ({"methods": {"pretrain": {"kind": "dsm"}}}, "methods.pretrain"),
])
def test_pretrain_option_is_validated(tmp_path, changes, key):
    path = tmp_path / "workflow.yaml"
    path.write_text(yaml.safe_dump(_tiny_workflow(**changes)))
    with pytest.raises(ConfigError, match=f"{path}: {key}"):
        load_workflow(str(path), None)


def test_pretrain_with_an_explicit_warm_start_is_refused(tmp_path):
    data = _tiny_workflow()
    data["experiment"]["training"]["warm_start"] = str(tmp_path / "other" / "checkpoint.pt")
    with pytest.raises(ConfigError, match="pretrain: .*warm_start"):
        from_mapping(compare.CompareLossesWorkflow, data, "workflow.yaml")


def test_pretrain_warm_starts_every_method_and_counts_its_steps(tmp_path):
    workflow = from_mapping(compare.CompareLossesWorkflow, _tiny_workflow(), "workflow.yaml")
    out = tmp_path / "run"
    results = compare.run(workflow, out, torch.device("cpu"))
    pre = checkpoint.load(out / "pretrain" / "checkpoint.pt")
    assert pre["step"] == 4 and pre["config"]["loss"]["kind"] == "dsm"
    assert float(pre["ema"]["network.output.weight"].abs().max()) > 0  # trained away from the zero init
    for name in ("dsm", "diffclf"):
        assert results[name]["steps"] == {"pretrain": 4, "method": 1, "total": 5}
        config = json.loads((out / name / "config.json").read_text())
        assert config["training"]["warm_start"] == str(out / "pretrain" / "checkpoint.pt")
        # lr 1e-9 for one step: the method's weights are still the pre-trained (EMA) ones
        state = checkpoint.load(out / name / "checkpoint.pt")
        for key, value in pre["ema"].items():
            torch.testing.assert_close(state["model"][key], value, atol=1e-6, rtol=0)
    assert compare.run(workflow, out, torch.device("cpu")) == results  # a finished run is reused


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


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yaml")))
def test_every_shipped_config_reads_back_as_written(name):
    """A run directory's config.json, read back with defaults filled in (how a resume compares it; a
    config that does not parse would be compared as stored), is the config that wrote it, for every
    shipped workflow and preset and its experiment: an unchanged command always resumes."""
    presets = [None, *yaml.safe_load((WORKFLOWS / name).read_text()).get("presets", {})]
    for preset in presets:
        config, _ = load_workflow(str(WORKFLOWS / name), preset)
        for part in (config, getattr(config, "experiment", None)):
            if part is not None:
                stored = json.loads(json.dumps(to_dict(part)))
                read_back = from_mapping(type(part), stored, f"{name} ({preset})")
                assert json.loads(json.dumps(to_dict(read_back))) == stored, (name, preset)
                assert rundir.with_defaults(stored, type(part)) == stored


def test_only_settings_declared_as_keeping_earlier_behaviour_are_filled_in_on_resume():
    """training.ema_power (0: the constant EMA that came before it) may be absent from an older run;
    sampling.bridge_levels (32, where runs before it had no bridge) may not."""
    experiment, _ = load_workflow(str(WORKFLOWS / "mog40.yaml"), None)
    stored = json.loads(json.dumps(to_dict(experiment)))
    del stored["experiment"]["training"]["ema_power"]
    # read as the constant EMA it was run with, so the workflow's ema_power 8 is a difference
    assert rundir.with_defaults(stored, type(experiment))["experiment"]["training"]["ema_power"] == 0.0
    generator, _ = load_workflow(str(WORKFLOWS / "aldp_boltzmann_generator.yaml"), None)
    stored = json.loads(json.dumps(to_dict(generator)))
    del stored["sampling"]["mcmc_on_path"]
    assert "mcmc_on_path" in rundir.with_defaults(stored, type(generator))["sampling"]
    del stored["sampling"]["bridge_levels"]
    assert "bridge_levels" not in rundir.with_defaults(stored, type(generator))["sampling"]
