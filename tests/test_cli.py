"""CLI: help, the smoke workflow end to end, and clear errors that overwrite nothing."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from boltzclf.cli.main import EXIT_USER_ERROR, main

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "gmm_mode_blindness.yaml"

TINY_EXPERIMENT = """
target: {name: two_modes, dim: 2}
grid: {kind: log_snr, n_levels: 8, t_min: 1.0e-3}
model: {hidden: 16, n_layers: 1, time_dim: 8}
loss: {kind: diffclf, k: 2}
training: {steps: 4, batch_size: 32, checkpoint_every: 2, log_every: 2, dataset_size: 128}
evaluation: {n_samples: 64, n_levels: 3}
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "boltzclf", "--help"], capture_output=True, text=True, check=True)
    for command in ("run", "train", "evaluate"):
        assert command in out.stdout


def test_smoke_workflow_writes_results_and_report(tmp_path, capsys):
    out = tmp_path / "gmm"
    assert main(["run", str(WORKFLOW), "--out", str(out), "--preset", "smoke", "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"dsm", "diffclf"}
    for method in results.values():
        for key in ("mode_weight_error", "ess_mean", "clf_loss", "clf_loss_exact", "fisher_mean"):
            assert isinstance(method[key], float)
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("config.json", "metadata.json", "dsm/checkpoint.pt", "diffclf/metrics.jsonl"):
        assert (out / name).exists(), name
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["device"] == "cpu" and metadata["packages"]["torch"]
    # running again resumes: nothing is retrained and the results are identical
    before = (out / "diffclf" / "checkpoint.pt").stat().st_mtime_ns
    assert main(["run", str(WORKFLOW), "--out", str(out), "--preset", "smoke", "--device", "cpu"]) == 0
    assert (out / "diffclf" / "checkpoint.pt").stat().st_mtime_ns == before
    assert json.loads((out / "results.json").read_text()) == results


INTERPOLANT_EXPERIMENT = TINY_EXPERIMENT.replace(
    "grid: {kind: log_snr, n_levels: 8, t_min: 1.0e-3}",
    "process: {kind: interpolant, gamma_factor: 1.0}\nend_target: {name: mog40, dim: 2}\n"
    "grid: {kind: uniform, n_levels: 8, t_min: 1.0e-3, t_max: 0.999}").replace(
    "loss: {kind: diffclf, k: 2}", "loss: {kind: diffclf, k: 3, dsm_weighting: square, antithetic: false}")


@pytest.mark.parametrize("text", [TINY_EXPERIMENT, INTERPOLANT_EXPERIMENT], ids=["vp", "interpolant"])
def test_train_then_evaluate(tmp_path, text):
    config = _write(tmp_path / "exp.yaml", text)
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert main(["evaluate", str(tmp_path / "run"), "--out", str(tmp_path / "eval"), "--n-samples", "32"]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert len(results["ess"]) == 3 and 0 < results["ess_mean"] <= 1


def test_evaluate_never_overwrites_another_run(tmp_path, capsys):
    config = _write(tmp_path / "exp.yaml", TINY_EXPERIMENT)
    for name in ("run", "other"):
        assert main(["train", str(config), "--out", str(tmp_path / name), "--device", "cpu"]) == 0
    before = (tmp_path / "other" / "results.json").read_bytes()
    assert main(["evaluate", str(tmp_path / "run"), "--out", str(tmp_path / "other")]) == EXIT_USER_ERROR
    assert "holds a run with a different config" in capsys.readouterr().err
    assert (tmp_path / "other" / "results.json").read_bytes() == before
    (tmp_path / "file").write_text("keep me")
    assert main(["evaluate", str(tmp_path / "run"), "--out", str(tmp_path / "file")]) == EXIT_USER_ERROR
    assert "exists and is not a directory" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "keep me"
    # the same evaluation again into its own directory is allowed (and gives the same numbers)
    for _ in range(2):
        assert main(["evaluate", str(tmp_path / "run"), "--out", str(tmp_path / "eval"), "--n-samples", "32"]) == 0


@pytest.mark.parametrize("text, message", [
    (TINY_EXPERIMENT + "\nextra_key: 1\n", "unknown key(s) 'extra_key'"),
    (TINY_EXPERIMENT.replace("steps: 4", "stepz: 4"), "training: unknown key(s) 'stepz'"),
    (TINY_EXPERIMENT.replace("steps: 4", "steps: four"), "training.steps: expected int, got str"),
    (TINY_EXPERIMENT.replace("kind: diffclf", "kind: magic"), "loss.kind: 'magic' is not one of"),
    (TINY_EXPERIMENT.replace("steps: 4", "steps: -1"), "training.steps: must be >= 1"),
    (TINY_EXPERIMENT.replace("grid: {kind: log_snr,", "process: {kind: interpolant}\nend_target: {name: mog40, dim: 2}\n"
                             "grid: {kind: uniform,"), "loss.dsm_weighting: the edm weighting needs a diffusion"),
    ("target: [unclosed\n", "malformed YAML"),
    ("- a list\n", "top level must be a mapping"),
])
def test_bad_config_is_a_clear_error(tmp_path, capsys, text, message):
    config = _write(tmp_path / "bad.yaml", text)
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert message in err and "bad.yaml" in err
    assert not (tmp_path / "run").exists()


def test_missing_files_are_clear_errors(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")]) == EXIT_USER_ERROR
    assert "nope.yaml: file not found" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "empty"), "--out", str(tmp_path / "e")]) == EXIT_USER_ERROR
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["run", str(WORKFLOW), "--out", str(tmp_path / "w"), "--preset", "nope"]) == EXIT_USER_ERROR
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_different_config_never_overwrites_an_existing_run(tmp_path, capsys):
    config = _write(tmp_path / "exp.yaml", TINY_EXPERIMENT)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    snapshot = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    other = _write(tmp_path / "other.yaml", TINY_EXPERIMENT.replace("dim: 2", "dim: 3"))
    assert main(["train", str(other), "--out", str(run)]) == EXIT_USER_ERROR
    assert "different config" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == snapshot


def test_console_script_exit_code_on_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "boltzclf", "train", str(tmp_path / "missing.yaml"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == EXIT_USER_ERROR
    assert "missing.yaml: file not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [
    ["pmf", "traj.dcd", "--system", "s.yaml", "--bins", "0"],
    ["pmf", "traj.dcd", "--system", "s.yaml", "--bins", "-3"],
    ["pmf", "traj.dcd", "--system", "s.yaml", "--bootstrap", "0"],
    ["pmf", "traj.dcd", "--system", "s.yaml", "--blocks", "x"],
    ["validate-energy", "s.yaml", "--sigma", "-1"],
    ["validate-energy", "s.yaml", "--sigma", "nan"],
    ["validate-energy", "s.yaml", "--n", "0"],
    ["validate-energy", "s.yaml", "--max-frames", "0"],
])
def test_non_positive_counts_and_scales_are_refused_before_anything_runs(tmp_path, capsys, command):
    flag = [part for part in command if part.startswith("--")][-1]
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, shown", [
    ("simulate", ["--threads THREADS", "(default: 2)", "(default: 1.0)"]),
    ("pmf", ["(default: 36)", "(default: 200)"]),
    ("sample", ["(default: ddpm)", "(default: isotropic)"]),
])
def test_help_pages_show_defaults(command, shown, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for fragment in shown:
        assert fragment in text
    assert "(default: None)" not in text
