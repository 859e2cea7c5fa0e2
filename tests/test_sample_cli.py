"""``boltzclf sample``: every sampler writes its files, reruns reuse them, bad options exit 2 and overwrite nothing."""
import json

import numpy as np
import pytest

from boltzclf.cli.main import EXIT_USER_ERROR, main
from test_cli import TINY_EXPERIMENT



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    (root / "tiny.yaml").write_text(TINY_EXPERIMENT)
    assert main(["train", str(root / "tiny.yaml"), "--out", str(root / "run"), "--device", "cpu"]) == 0
    return root / "run"


@pytest.mark.parametrize("sampler", ["smc", "ais", "ancestral", "ode", "langevin", "replica"])
def test_each_sampler_writes_weighted_samples_and_diagnostics(sampler, trained, tmp_path):
    out = tmp_path / sampler
    args = ["sample", str(trained), "--sampler", sampler, "--n", "64", "--out", str(out), "--device", "cpu",
            "--langevin-steps", "5", "--mcmc-steps", "1" if sampler == "smc" else "0", "--walkers", "16",
            "--warmup", "3"]
    assert main(args) == 0
    arrays = np.load(out / "samples.npz")
    assert arrays["samples"].shape == (64, 2) and arrays["log_weights"].shape == (64,)
    assert abs(np.logaddexp.reduce(arrays["log_weights"])) < 1e-9  # normalised
    results = json.loads((out / "results.json").read_text())
    assert len(results["mode_weights"]) == 2 and 0 <= results["mode_weight_error"] <= 1
    assert (out / "ess.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    if sampler in ("smc", "ais"):
        moves = 1 if sampler == "smc" else 0  # one MALA move per level: 6 more model levels, 1 more target one
        assert len(diagnostics["ess"]) == 7 and diagnostics["n_model_evals"] == 64 * (7 + 6 * moves)
        assert diagnostics["n_target_evals"] == 64 * (1 + moves)
        assert np.isfinite(diagnostics["log_z"])
    before = (out / "samples.npz").stat().st_mtime_ns
    assert main(args) == 0  # finished: reused, not redone
    assert (out / "samples.npz").stat().st_mtime_ns == before


def test_mcmc_on_path_adds_the_moves_at_every_level_above_the_bridge(trained, tmp_path):
    counts = {}
    for name, extra in (("bridge_only", []), ("on_path", ["--mcmc-on-path"])):
        out = tmp_path / name
        assert main(["sample", str(trained), "--sampler", "smc", "--n", "64", "--out", str(out), "--mcmc-steps", "1",
                     "--bridge-levels", "2", *extra]) == 0
        diagnostics = json.loads((out / "diagnostics.json").read_text())
        counts[name] = diagnostics["n_model_evals"], sum(a is not None for a in diagnostics["acceptance"])
    # 9 moves: 7 down the model's 8 levels, 2 through the bridge; one MALA proposal per particle and move
    assert counts["bridge_only"][1] == 2 and counts["on_path"][1] == 9
    assert counts["on_path"][0] - counts["bridge_only"][0] == 64 * 7


def test_same_seed_same_samples(trained, tmp_path):
    for name in ("a", "b"):
        assert main(["sample", str(trained), "--sampler", "smc", "--n", "64", "--out", str(tmp_path / name)]) == 0
    a, b = (np.load(tmp_path / name / "samples.npz") for name in ("a", "b"))
    assert np.array_equal(a["samples"], b["samples"]) and np.array_equal(a["log_weights"], b["log_weights"])


@pytest.mark.parametrize("options, message", [
    (["--n", "60"], "--groups"),
    (["--resample-threshold", "2"], "--resample-threshold"),
    (["--levels", "1"], "--levels"),
    (["--step-size", "0"], "--step-size"),
    (["--sampler", "replica", "--n", "64", "--walkers", "24"], "--walkers"),
    (["--mcmc-on-path"], "--mcmc-on-path"),
])
def test_bad_options_exit_2_with_one_clear_line(options, message, trained, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["sample", str(trained), "--sampler", "smc", "--out", str(out), *options]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_missing_run_and_other_config_are_refused(trained, tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nothing"), "--sampler", "smc", "--out", str(tmp_path / "o")]) == EXIT_USER_ERROR
    out = tmp_path / "kept"
    assert main(["sample", str(trained), "--sampler", "ancestral", "--n", "64", "--out", str(out)]) == 0
    saved = (out / "samples.npz").read_bytes()
    assert main(["sample", str(trained), "--sampler", "smc", "--n", "64", "--out", str(out)]) == EXIT_USER_ERROR
    assert (out / "samples.npz").read_bytes() == saved
