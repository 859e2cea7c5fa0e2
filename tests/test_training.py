"""Trainer: exact resume after a kill, warm start, metrics log, checkpoint errors."""
import dataclasses
import json

import pytest
import torch

from boltzclf.core.errors import CheckpointError
from boltzclf.losses import LossConfig
from boltzclf.pipelines.experiment import load_trained, train_experiment
from boltzclf.training import checkpoint
from boltzclf.training.config import EvaluationConfig, ExperimentConfig, GridConfig, ModelConfig, ProcessConfig, \
    TargetConfig, TrainingConfig
from boltzclf.training.ema import EMA

CPU = torch.device("cpu")


def _config(steps=12, warm_start=None, loss="diffclf"):
    return ExperimentConfig(
        target=TargetConfig(dim=2), grid=GridConfig(n_levels=8), model=ModelConfig(hidden=16, n_layers=1, time_dim=8),
        loss=LossConfig(loss, k=2), evaluation=EvaluationConfig(n_samples=64, n_levels=2),
        training=TrainingConfig(steps=steps, batch_size=32, checkpoint_every=4, log_every=2, ema=0.9,
                                dataset_size=256, warm_start=warm_start, lr_schedule="cosine"))


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


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_kill_and_resume_equals_uninterrupted(tmp_path, device):
    device = torch.device(device)
    config = _config()
    train_experiment(config, tmp_path / "straight", device)
    with pytest.raises(Killed):
        train_experiment(config, tmp_path / "killed", device, on_step=_kill_at(7))  # last checkpoint: step 4
    assert _params(tmp_path / "killed" / "checkpoint.pt")[2] == 4
    train_experiment(config, tmp_path / "killed", device)
    straight, resumed = _params(tmp_path / "straight" / "checkpoint.pt"), _params(tmp_path / "killed" / "checkpoint.pt")
    assert straight[2] == resumed[2] == 12
    for key in straight[0]:
        assert torch.equal(straight[0][key], resumed[0][key]), key
        assert torch.equal(straight[1][key], resumed[1][key]), key
    logs = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert logs == [2, 4, 6, 8, 10, 12]  # lines written after the checkpoint were dropped, none duplicated


def test_cosine_schedule_decays_to_zero():
    from boltzclf.training.trainer import _set_learning_rate

    config = TrainingConfig(steps=10, lr=1e-3, lr_schedule="cosine")
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=config.lr)
    rates = []
    for step in range(10):
        _set_learning_rate(optimizer, config, step)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[0] == 1e-3 and all(b < a for a, b in zip(rates, rates[1:])) and rates[-1] < 0.03e-3


def test_free_energies_are_gauge_fixed_and_learned(tmp_path):
    train_experiment(_config(steps=6), tmp_path / "run", CPU)
    state = checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    f = state["free_energies"]
    assert f[-1] == 0 and f.abs().sum() > 0


def test_warm_start_loads_weights(tmp_path):
    import dataclasses

    train_experiment(_config(steps=4, loss="dsm"), tmp_path / "pre", CPU)
    w_pre = checkpoint.load(tmp_path / "pre" / "checkpoint.pt")["ema"]["network.input.weight"]

    def one_step(warm_start, name):
        config = _config(steps=1, warm_start=warm_start)
        config = dataclasses.replace(config, training=dataclasses.replace(config.training, seed=1))
        return train_experiment(config, tmp_path / name, CPU).state_dict()["network.input.weight"]

    warm = one_step(str(tmp_path / "pre" / "checkpoint.pt"), "warm")
    cold = one_step(None, "cold")  # another seed: a different initialisation
    assert (warm - w_pre).abs().max() < 1e-2 < (cold - w_pre).abs().max()


def test_warm_start_from_incompatible_checkpoint_is_a_clear_error(tmp_path):
    train_experiment(_config(steps=2), tmp_path / "pre", CPU)
    other = ExperimentConfig(target=TargetConfig(dim=3), grid=GridConfig(n_levels=8),
                             model=ModelConfig(hidden=16, n_layers=1, time_dim=8),
                             training=TrainingConfig(steps=1, batch_size=8, warm_start=str(tmp_path / "pre" / "checkpoint.pt")))
    with pytest.raises(CheckpointError, match="do not fit"):
        train_experiment(other, tmp_path / "bad", CPU)


def _interpolant(steps, warm_start=None):
    return dataclasses.replace(_config(steps, warm_start), process=ProcessConfig(kind="interpolant", gamma_factor=0.5),
                               end_target=TargetConfig(dim=2, name="mog40"), grid=GridConfig(n_levels=8, t_max=0.99),
                               loss=LossConfig("diffclf", k=2, dsm_weighting="uniform"))


def test_a_checkpoint_without_the_end_class_normalisers_warm_starts_but_does_not_resume(tmp_path):
    """Interpolant models gained ``end_free_energies`` (g); checkpoints written before still warm-start
    a run (g starts at 0), but their optimizer state cannot resume one: a clear error, not a traceback."""
    train_experiment(_interpolant(steps=2), tmp_path / "pre", CPU)
    path = tmp_path / "pre" / "checkpoint.pt"
    state = checkpoint.load(path)
    for key in ("model", "ema"):
        del state[key]["end_free_energies"]
    state["optimizer"]["param_groups"][0]["params"] = state["optimizer"]["param_groups"][0]["params"][:-1]
    torch.save(state, path)
    model = train_experiment(_interpolant(steps=2, warm_start=str(path)), tmp_path / "warm", CPU)
    assert model.end_free_energies.shape == (2,)
    with pytest.raises(CheckpointError, match="optimizer state does not fit"):
        train_experiment(_interpolant(steps=2), tmp_path / "pre", CPU)
    bad = {**state["model"], "unexpected": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoint.load_weights(model, bad, "x.pt")


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


def _nan_loss_on(steps_to_poison):
    from boltzclf.losses import build_loss

    inner, calls = build_loss(LossConfig("dsm", k=1)), {"n": 0}

    def loss(model, batch, generator):
        calls["n"] += 1
        out = inner(model, batch, generator)
        if calls["n"] in steps_to_poison:
            out["loss"] = out["loss"] * float("nan")
        return out
    return loss


def _train_with(loss, tmp_path, steps):
    from boltzclf.training.config import build_model, build_target
    from boltzclf.training.data import MixtureData
    from boltzclf.training.trainer import train

    config = _config(steps=steps)
    data = MixtureData(build_target(config.target), None, 64, 0, CPU)
    return train(build_model(config), loss, data, config.training, tmp_path, {}, CPU)


def test_non_finite_losses_are_skipped_counted_and_fatal_when_persistent(tmp_path, caplog):
    _train_with(_nan_loss_on({2, 12}), tmp_path / "some", steps=12)  # the last step is poisoned too
    assert checkpoint.load(tmp_path / "some" / "checkpoint.pt")["step"] == 12
    assert sum("non-finite loss" in r.message for r in caplog.records) == 2
    from boltzclf.core.errors import BoltzclfError

    with pytest.raises(BoltzclfError, match="10 consecutive non-finite losses"):
        _train_with(_nan_loss_on(set(range(1, 100))), tmp_path / "all", steps=20)


def test_partly_written_log_line_is_dropped_on_resume(tmp_path):
    config = _config()
    with pytest.raises(Killed):
        train_experiment(config, tmp_path / "run", CPU, on_step=_kill_at(7))
    with open(tmp_path / "run" / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 8, "lo')  # a kill in the middle of an append
    train_experiment(config, tmp_path / "run", CPU)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10, 12]


def test_resume_on_another_device_is_a_clear_error(tmp_path):
    config = _config()
    with pytest.raises(Killed):
        train_experiment(config, tmp_path / "run", CPU, on_step=_kill_at(5))
    state = checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    state["rng"]["generator_device"] = "cuda"  # as if trained on a GPU
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="trained on cuda; resume it with --device cuda"):
        train_experiment(config, tmp_path / "run", CPU)


def test_diffclf_training_is_bitwise_reproducible_with_two_threads(tmp_path):
    """Two DiffCLF runs with the same seed end with bitwise-equal parameters. With > 1 thread the
    network's time path used to be spread to the rows by an indexed gather, whose backward is an
    accumulating scatter that adds in a thread-dependent order on CPU."""
    import dataclasses

    config = _config(steps=30)
    config = dataclasses.replace(config, model=ModelConfig(hidden=64, n_layers=1, time_dim=8),
                                 training=dataclasses.replace(config.training, batch_size=512, dataset_size=4096))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for name in ("a", "b"):
            train_experiment(config, tmp_path / name, CPU)
    finally:
        torch.set_num_threads(threads)
    a, b = _params(tmp_path / "a" / "checkpoint.pt"), _params(tmp_path / "b" / "checkpoint.pt")
    for key in a[0]:
        assert torch.equal(a[0][key], b[0][key]), key


@pytest.mark.parametrize("section, problem_key", [
    ({"process": {"kind": "edm"}}, "grid.t_max"),  # default grid: σ_max = 0.9999, not the prior
    ({"process": {"kind": "edm"}, "grid": {"kind": "karras", "t_min": 0.002, "t_max": 5.0}}, "grid.t_max"),
    ({"grid": {"kind": "karras", "t_min": 0.002, "t_max": 0.999}}, "grid.kind"),  # karras is σ, VP is t
    ({"grid": {"t_max": 1.5}}, "grid.t_max"),
    ({"grid": {"t_max": 0.5}}, "grid.t_max"),  # VP σ(0.5) ≈ 4 < 10 σ_d
    ({"process": {"kind": "interpolant"}, "end_target": {"name": "mog40", "dim": 2},
      "loss": {"dsm_weighting": "uniform"}, "grid": {"t_max": 1.0}}, "grid.t_max"),
    ({"process": {"kind": "interpolant"}, "end_target": {"name": "mog40", "dim": 2},
      "loss": {"dsm_weighting": "uniform"}, "grid": {"kind": "log_snr"}}, "grid.kind"),
    ({"grid": {"rho": 5.0}}, "grid.rho"),
    ({"process": {"kind": "edm", "beta_max": 10.0}, "grid": {"kind": "karras", "t_min": 0.002, "t_max": 80.0}},
     "process.beta_max"),
    ({"process": {"kind": "vp", "gamma_factor": 0.5}}, "process.gamma_factor"),
])
def test_grid_and_process_mismatches_are_config_errors_naming_the_key(section, problem_key):
    from boltzclf.core.config import from_mapping
    from boltzclf.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"run.yaml: {problem_key}: "):
        from_mapping(ExperimentConfig, {"target": {"dim": 2}, **section}, "run.yaml")


@pytest.mark.parametrize("section", [
    {"process": {"kind": "edm"}, "grid": {"kind": "karras", "t_min": 0.002, "t_max": 80.0}},
    {"process": {"kind": "edm"}, "grid": {"kind": "uniform", "t_min": 0.01, "t_max": 10.0}},
    {"process": {"kind": "edm"}, "grid": {"kind": "log_snr", "t_min": 0.01, "t_max": 80.0}},
    {"grid": {"kind": "log_snr", "t_min": 1e-3, "t_max": 0.9999}},
    {"process": {"kind": "interpolant"}, "end_target": {"name": "mog40", "dim": 2},
     "loss": {"dsm_weighting": "uniform"}, "grid": {"t_max": 0.99}},
])
def test_consistent_grids_are_accepted(section):
    from boltzclf.core.config import from_mapping
    from boltzclf.training.config import build_model

    config = from_mapping(ExperimentConfig, {"target": {"dim": 2}, **section}, "run.yaml")
    model = build_model(config)
    if config.process.kind != "interpolant":  # the last level is (close to) the prior: σ ≥ 10 σ_d
        assert float(model.process.sigma(model.levels[-1].double())) >= 10 * model.sigma_data


def test_power_ema_forgets_its_start_and_follows_the_power_decay():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.999, power=8.0)
    with torch.no_grad():
        model.weight.add_(1.0)  # the shadow still holds the old (e.g. warm-start) weights
    ema.update(model, 1)
    torch.testing.assert_close(ema.shadow.weight, model.weight)  # d_1 = 0
    assert ema.decay_at(10) == pytest.approx(0.9 ** 9)
    assert ema.decay_at(10 ** 6) == 0.999  # capped by the constant decay
    assert EMA(model, decay=0.99).decay_at(1) == 0.99  # power 0: constant
    before = ema.shadow.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, 10)
    torch.testing.assert_close(ema.shadow.weight, 0.9 ** 9 * before + (1 - 0.9 ** 9) * model.weight)
