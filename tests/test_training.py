"""Trainer: exact resume after a kill, warm start, metrics log, checkpoint errors."""
import json

import pytest
import torch

from boltzclf.core.errors import CheckpointError
from boltzclf.losses import LossConfig
from boltzclf.pipelines.experiment import load_trained, train_experiment
from boltzclf.training import checkpoint
from boltzclf.training.config import EvaluationConfig, ExperimentConfig, GridConfig, ModelConfig, TargetConfig, \
    TrainingConfig

CPU = torch.device("cpu")


def _config(steps=12, warm_start=None, loss="diffclf"):
    return ExperimentConfig(
        target=TargetConfig(dim=2), grid=GridConfig(n_levels=8), model=ModelConfig(hidden=16, n_layers=1, time_dim=8),
        loss=LossConfig(loss, k=2), evaluation=EvaluationConfig(n_samples=64, n_levels=2),
        training=TrainingConfig(steps=steps, batch_size=32, checkpoint_every=4, log_every=2, ema=0.9,
                                dataset_size=256, warm_start=warm_start))


class Killed(Exception):
    pass


def _kill_at(step_to_die):
    def hook(step):
        if step == step_to_die:
            raise Killed
    return hook


def _params(path):
    state = checkpoint.load(path)
    return state["model"], state["ema"], state["step"]


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    config = _config()
    train_experiment(config, tmp_path / "straight", CPU)
    with pytest.raises(Killed):
        train_experiment(config, tmp_path / "killed", CPU, on_step=_kill_at(7))  # last checkpoint: step 4
    assert _params(tmp_path / "killed" / "checkpoint.pt")[2] == 4
    train_experiment(config, tmp_path / "killed", CPU)
    straight, resumed = _params(tmp_path / "straight" / "checkpoint.pt"), _params(tmp_path / "killed" / "checkpoint.pt")
    assert straight[2] == resumed[2] == 12
    for key in straight[0]:
        assert torch.equal(straight[0][key], resumed[0][key]), key
        assert torch.equal(straight[1][key], resumed[1][key]), key
    logs = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert logs == [2, 4, 6, 8, 10, 12]  # lines written after the checkpoint were dropped, none duplicated


def test_free_energies_are_gauge_fixed_and_learned(tmp_path):
    train_experiment(_config(steps=6), tmp_path / "run", CPU)
    state = checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    f = state["free_energies"]
    assert f[-1] == 0 and f.abs().sum() > 0


def test_warm_start_loads_weights(tmp_path):
    train_experiment(_config(steps=4, loss="dsm"), tmp_path / "pre", CPU)
    pre = checkpoint.load(tmp_path / "pre" / "checkpoint.pt")
    config = _config(steps=0 + 1, warm_start=str(tmp_path / "pre" / "checkpoint.pt"))
    model = train_experiment(config, tmp_path / "fine", CPU)
    # one step of lr 1e-3 from the warm-start weights stays close; from scratch it would not
    w_pre = pre["ema"]["network.input.weight"]
    assert (model.state_dict()["network.input.weight"] - w_pre).abs().max() < 1e-2


def test_warm_start_from_incompatible_checkpoint_is_a_clear_error(tmp_path):
    train_experiment(_config(steps=2), tmp_path / "pre", CPU)
    other = ExperimentConfig(target=TargetConfig(dim=3), grid=GridConfig(n_levels=8),
                             model=ModelConfig(hidden=16, n_layers=1, time_dim=8),
                             training=TrainingConfig(steps=1, batch_size=8, warm_start=str(tmp_path / "pre" / "checkpoint.pt")))
    with pytest.raises(CheckpointError, match="do not fit"):
        train_experiment(other, tmp_path / "bad", CPU)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "missing.pt")


def test_load_trained_round_trip(tmp_path):
    config = _config(steps=2)
    model = train_experiment(config, tmp_path / "run", CPU)
    loaded, loaded_config = load_trained(tmp_path / "run", CPU)
    assert loaded_config == config
    x = torch.randn(5, 2)
    t = torch.full((5,), 0.3)
    assert torch.allclose(loaded.energy(t, x), model.energy(t, x))
