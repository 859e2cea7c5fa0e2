"""``boltzclf run`` under ``torchrun`` (2 gloo processes on CPU): training stages on DDP, batched
dynamics sharded, everything else on rank 0. The compare-losses smoke workflow gives the results of
one process (the same parameters to float rounding, so the same metrics); a config the processes
cannot share is refused before any output exists; the alanine-dipeptide Boltzmann-generator smoke
workflow (sharded reference dynamics, DDP training, rank-0 sampling) and the solvation smoke workflow
(sharded λ windows, DDP interpolant training, rank-0 estimates) run to their end (slow)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from torchrun_launch import ENV, REPO, launcher


def run_workflow(workflow: Path, out: Path, processes: int, preset: str = "smoke") -> subprocess.CompletedProcess:
    command = launcher(processes) + ["-m", "boltzclf", "run", str(workflow), "--preset", preset, "--out", str(out),
                                     "--device", "cpu"]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=1200, cwd=REPO)


def with_shards(source: str, tmp_path: Path, *experiments: str) -> Path:
    """A copy of workflow ``source`` whose smoke preset splits the named experiments' batches in 2
    (dotted keys for nested experiments)."""
    data = yaml.safe_load((REPO / source).read_text())
    smoke = data["presets"]["smoke"]
    for key in experiments:
        node = smoke
        for part in key.split("."):
            node = node.setdefault(part, {})
        node.setdefault("training", {})["shards"] = 2
    path = tmp_path / Path(source).name
    path.write_text(yaml.safe_dump(data))
    return path


def test_compare_losses_on_two_processes_gives_the_results_of_one(tmp_path):
    workflow = with_shards("workflows/gmm_mode_blindness.yaml", tmp_path, "experiment")
    one, two = run_workflow(workflow, tmp_path / "one", 1), run_workflow(workflow, tmp_path / "two", 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[:6000]
    assert two.stdout.count("wrote ") == 1  # rank 0 alone reports
    results = [json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two")]
    assert results[0].keys() == results[1].keys() == {"dsm", "diffclf"}
    for method in results[0]:
        for key in ("mode_weight_error", "clf_loss", "fisher_mean"):
            assert results[1][method][key] == pytest.approx(results[0][method][key], rel=1e-3, abs=1e-4), key


def test_work_the_processes_cannot_share_is_refused_before_any_output(tmp_path):
    done = run_workflow(REPO / "workflows" / "gmm_mode_blindness.yaml", tmp_path / "out", 2)
    assert done.returncode != 0  # torchrun reports a failed child as 1; the child itself exits with 2
    assert "experiment.training.shards: 1 cannot be shared by 2 processes" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_boltzmann_generator_smoke_workflow_on_two_processes(tmp_path):
    workflow = with_shards("workflows/aldp_boltzmann_generator.yaml", tmp_path, "experiment", "coarse_grained")
    done = run_workflow(workflow, tmp_path / "out", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    reference = json.loads((tmp_path / "out" / "reference" / "results.json").read_text())
    assert reference["dynamics"]["processes"] == 2
    for method in ("dsm", "diffclf"):
        assert {"smc", "reweighting", "langevin", "cg_langevin", "learned_dF_phi"} <= results[method].keys()


@pytest.mark.slow
def test_solvation_smoke_workflow_on_two_processes(tmp_path):
    workflow = with_shards("workflows/aldp_solvation.yaml", tmp_path, "learned.experiment")
    done = run_workflow(workflow, tmp_path / "out", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for path in ("gb_charges", "full_gb"):
        assert {"mbar", "ti", "bar", "fep", "learned_ti_dsm", "learned_ti_diffclf"} <= results[path].keys()
        assert results["diagnostics"][path]["dynamics"]["processes"] == 2
