"""SMC with its groups on 2 gloo processes under torchrun against 1 process (same seed): the same
estimator, so log Ẑ and the heavy-mode fraction agree with each other and with the truth (log Z = 0,
2/3) within their standard errors; weights are normalised over both ranks."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from torchrun_launch import ENV, launcher

SCRIPT = Path(__file__).with_name("smc_script.py")


def run_smc(tmp_path: Path, processes: int) -> dict:
    out = tmp_path / f"smc_{processes}.json"
    done = subprocess.run(launcher(processes) + [str(SCRIPT), str(out), "0"], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_ranks_give_the_estimates_of_one(tmp_path):
    one, two = run_smc(tmp_path, 1), run_smc(tmp_path, 2)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for result in (one, two):
        assert result["n_groups"] == 16 and result["n_target_evals"] == 4096
        assert math.isclose(result["weight_total"], 1.0, rel_tol=1e-9)  # normalised over all ranks
        assert abs(result["log_z"]) <= 3 * result["log_z_se"]
        assert abs(result["heavy"] - 2 / 3) <= 3 * result["heavy_se"]
    assert abs(one["log_z"] - two["log_z"]) <= 3 * math.hypot(one["log_z_se"], two["log_z_se"])
    assert abs(one["heavy"] - two["heavy"]) <= 3 * math.hypot(one["heavy_se"], two["heavy_se"])


@pytest.mark.slow
def test_boltzclf_sample_smc_under_torchrun(tmp_path):
    """The command on a (briefly) trained run: 2 processes write one output with all particles, weights
    normalised over them, and a log Ẑ within the standard errors of the 1-process run's."""
    import numpy as np

    config = tmp_path / "experiment.yaml"
    config.write_text("target: {name: two_modes, dim: 2}\n"
                      "grid: {kind: log_snr, n_levels: 16, t_min: 1.0e-3, t_max: 0.9999}\n"
                      "model: {hidden: 16, n_layers: 1, time_dim: 8}\n"
                      "training: {steps: 30, batch_size: 64, dataset_size: 0, checkpoint_every: 30, log_every: 10}\n"
                      "evaluation: {n_samples: 64, n_levels: 2}\n")
    trained = subprocess.run(launcher(1) + ["-m", "boltzclf", "train", str(config), "--out", str(tmp_path / "run"),
                                            "--device", "cpu"], env=ENV, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    records = {}
    for processes in (1, 2):
        out = tmp_path / f"smc_{processes}"
        done = subprocess.run(launcher(processes) + ["-m", "boltzclf", "sample", str(tmp_path / "run"), "--sampler",
                                                     "smc", "--n-samples", "2048", "--groups", "8", "--out", str(out),
                                                     "--device", "cpu"],
                              env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        samples = np.load(out / "samples.npz")
        assert samples["samples"].shape == (2048, 2)
        assert abs(np.logaddexp.reduce(samples["log_weights"])) < 1e-9
        records[processes] = json.loads((out / "diagnostics.json").read_text())
    one, two = records[1], records[2]
    assert len(two["log_z_groups"]) == 8
    assert abs(one["log_z"] - two["log_z"]) <= 3 * math.hypot(one["log_z_se"], two["log_z_se"])
