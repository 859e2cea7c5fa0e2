"""``boltzclf train`` under ``torchrun`` (2 gloo processes on CPU) against one process with the same
config: the same parameters, EMA and log to float rounding, and a run killed on 2 processes resumes
on 1 to the parameters of an uninterrupted single-process run. The runs are short: the processes sum
the gradient in another order, and training amplifies such rounding differences (1-process against
2-process parameters: 2e-6 apart after 40 steps, 1e-5 after 80, 3e-3 after 160)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from torchrun_launch import ENV, launcher

EXPERIMENT = """\
target: {{name: two_modes, dim: 4, separation: 5.0}}
grid: {{kind: log_snr, n_levels: 16, t_min: 1.0e-3, t_max: 0.9999}}
model: {{hidden: 32, n_layers: 2, time_dim: 16}}
loss: {{kind: diffclf, k: 2, pairs: uniform}}
training: {{steps: {steps}, batch_size: {batch}, lr: 2.0e-3, ema: 0.9, dataset_size: {dataset},
           checkpoint_every: {every}, log_every: 5, seed: 3, shards: 2}}
evaluation: {{n_samples: 256, n_levels: 4}}
"""


def experiment(tmp_path: Path, steps: int = 20, every: int = 10, dataset: int = 0, batch: int = 64) -> Path:
    path = tmp_path / f"experiment_{steps}_{dataset}_{batch}.yaml"
    path.write_text(EXPERIMENT.format(steps=steps, every=every, dataset=dataset, batch=batch))
    return path


def command(config: Path, out: Path, processes: int) -> list[str]:
    return launcher(processes) + ["-m", "boltzclf", "train", str(config), "--out", str(out), "--device", "cpu"]


def train(config: Path, out: Path, processes: int) -> subprocess.CompletedProcess:
    return subprocess.run(command(config, out, processes), env=ENV, capture_output=True, text=True, timeout=600)


def weights(out: Path) -> dict:
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    return {"model": state["model"], "ema": state["ema"], "step": state["step"]}


def assert_same_training(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa["step"] == wb["step"]
    for part in ("model", "ema"):
        assert wa[part].keys() == wb[part].keys()
        for key in wa[part]:
            torch.testing.assert_close(wb[part][key], wa[part][key], rtol=1e-5, atol=1e-6, msg=f"{part}.{key}")
    logs = [[json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] for out in (a, b)]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]]
    for ra, rb in zip(*logs):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)


@pytest.mark.parametrize("dataset", [0, pytest.param(4096, marks=pytest.mark.slow)], ids=["fresh-samples", "fixed-dataset"])
def test_two_processes_train_the_parameters_of_one(tmp_path, dataset):
    config = experiment(tmp_path, dataset=dataset)
    one, two = train(config, tmp_path / "one", 1), train(config, tmp_path / "two", 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_training(tmp_path / "one", tmp_path / "two")
    assert json.loads(one.stdout)["mode_weight_error"] == pytest.approx(
        json.loads(two.stdout)["mode_weight_error"], rel=1e-3, abs=1e-4)


def test_processes_that_cannot_share_the_streams_are_refused(tmp_path):
    config = tmp_path / "three_shards.yaml"
    config.write_text(EXPERIMENT.format(steps=4, every=2, dataset=0, batch=63).replace("shards: 2", "shards: 3"))
    done = train(config, tmp_path / "out", 2)
    assert done.returncode != 0
    assert "training.shards: 3 cannot be shared by 2 processes" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_killed_on_two_processes_resumes_on_one(tmp_path):
    """Large batches keep the 40 steps slow enough to be killed part-way."""
    config = experiment(tmp_path, steps=40, every=10, batch=4096)
    proc = subprocess.Popen(command(config, tmp_path / "killed", 2), env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (tmp_path / "killed" / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = weights(tmp_path / "killed")["step"]
    assert killed_at < 40, "the run finished before it could be killed"
    resumed = train(config, tmp_path / "killed", 1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    uninterrupted = train(config, tmp_path / "one", 1)
    assert uninterrupted.returncode == 0
    assert_same_training(tmp_path / "one", tmp_path / "killed")
