"""Kill-anywhere resume suite (issue 13 item 3): every long-running command, SIGKILLed at chosen and at
random points and then re-run with the same command, ends with the output of an uninterrupted run.

Each case runs ``python -m boltzclf ...`` in a subprocess and kills it at each of its kill points in
turn (each kill hits the run as resumed after the previous one; see :mod:`kill_helpers` for the three
kinds: a random delay, a file appearing, or the instant just before or just after a given atomic
write, e.g. between a chunk and its checkpoint), then runs the same command to completion and compares
the directory with an uninterrupted run of the same command:

* bitwise (CPU) wherever the command is deterministic: trajectories, energies, checkpoint tensors
  (model, EMA, optimiser, RNG states, walkers), metrics logs, samples and every number of
  ``results.json`` / ``diagnostics.json`` except wall-clock fields (:func:`kill_helpers.compare_run_dirs`);
* statistically for openmmtools parallel tempering, whose Langevin noise comes from integrators that
  openmmtools seeds at random and whose random state it does not checkpoint
  (:func:`test_parallel_tempering_statistically`).

The kill delays are drawn from a fixed seed. :data:`SURVIVED` lists every kill point survived; the
count per command is printed at the end of the module (``kill-anywhere: N kill points survived ...``).
Two kill points of ``train`` run by default; the rest are marked ``slow``.
"""
from __future__ import annotations

import importlib.util
import random
import textwrap
from collections import Counter
from pathlib import Path

import mdtraj
import numpy as np
import pytest
from kill_helpers import (
    REPO,
    AfterTime,
    AtWrite,
    OnFile,
    Reference,
    compare_run_dirs,
    kill_and_resume,
    run_to_completion,
    stray_temporaries,
)

#: (command, kill point) of every kill point survived in this session.
SURVIVED: list[tuple[str, str]] = []

_DELAYS = random.Random(13)  # the kill times, drawn in a fixed order at import (independent of -k / -m)


def random_time() -> AfterTime:
    """A kill at a random moment between 5 % and 90 % of the uninterrupted run's working time."""
    return AfterTime(round(_DELAYS.uniform(0.05, 0.9), 3))


VACUUM = REPO / "systems" / "alanine_dipeptide_vacuum.yaml"
IMPLICIT = REPO / "systems" / "alanine_dipeptide_implicit.yaml"
OPENMM = ["--threads", "1", "--equilibration-ps", "0.5", "--stride-ps", "0.1", "--no-progress"]
TORCH = ["--engine", "torch", "--threads", "1", "--equilibration-ps", "0.1", "--stride-ps", "0.05", "--no-compile",
         "--dtype", "float64", "--no-progress"]

#: the workflows run with their ``smoke`` presets (paths relative to the repository, the working directory)
WORKFLOWS = {"gmm": "gmm_mode_blindness", "gmm-smc": "gmm_smc", "reference": "aldp_implicit_reference",
             "solvation": "aldp_solvation", "boltzmann-generator": "aldp_boltzmann_generator"}

EXPERIMENT = textwrap.dedent("""\
    target: {name: two_modes, dim: 2, separation: 5.0}
    process: {kind: vp, beta_min: 0.1, beta_max: 20.0}
    grid: {kind: log_snr, n_levels: 8, t_min: 1.0e-3, t_max: 0.9999}
    model: {hidden: 16, n_layers: 2, time_dim: 8, embedding: positional}
    loss: {kind: diffclf, k: 2, weight: 1.0, pairs: uniform}
    training: {steps: 24, batch_size: 64, lr: 2.0e-3, lr_schedule: cosine, ema: 0.9, dataset_size: 2048,
               checkpoint_every: 4, log_every: 2, seed: 0}
    evaluation: {n_samples: 256, n_levels: 4, seed: 1234}
    """)
#: checkpoints off the logging grid: a log window spans a checkpoint
EXPERIMENT_OFF_GRID = EXPERIMENT.replace("checkpoint_every: 4, log_every: 2", "checkpoint_every: 6, log_every: 4")

MOLECULAR = textwrap.dedent("""\
    data: {{system: {system}, trajectory: {trajectory}, validation_fraction: 0.2, rotations: true}}
    process: {{kind: edm}}
    grid: {{kind: karras, n_levels: 8, t_min: 2.0e-3, t_max: 2.0}}
    model: {{kind: pairwise, hidden: 16, n_layers: 1, time_dim: 8}}
    loss: {{kind: diffclf, pairs: adjacent}}
    training: {{steps: 12, batch_size: 8, checkpoint_every: 4, log_every: 2, ema: 0.9}}
    evaluation: {{n_samples: 16}}
    """)


class Commands:
    """The commands of the suite (argument lists for ``python -m boltzclf`` given ``--out``), their
    inputs, and their uninterrupted reference runs, each made once, on first use."""

    def __init__(self, root: Path):
        self.root = root
        self._references: dict[str, Reference] = {}
        (root / "experiment.yaml").write_text(EXPERIMENT)
        (root / "experiment_off_grid.yaml").write_text(EXPERIMENT_OFF_GRID)

    def args(self, name: str, out: Path) -> list:
        """The arguments of command ``name`` writing into ``out``."""
        out = ["--out", out]
        commands = {
            "simulate-openmm": lambda: ["simulate", VACUUM, *out, "--ns", "0.01", "--checkpoint-frames", "20",
                                        *OPENMM],
            "simulate-openmm-pt": lambda: ["simulate", VACUUM, *out, "--ns", "0.01", "--checkpoint-frames", "10",
                                           *OPENMM, "--replicas", "2", "--max-temperature", "400"],
            "simulate-torch": lambda: ["simulate", IMPLICIT, *out, "--ns", "0.0015", "--walkers", "3",
                                       "--checkpoint-frames", "10", *TORCH],
            "simulate-torch-remd": lambda: ["simulate", IMPLICIT, *out, "--ns", "0.001", "--walkers", "4",
                                            "--replicas", "3", "--max-temperature", "450", "--exchange-ps", "0.05",
                                            "--checkpoint-frames", "5", *TORCH],
            "train": lambda: ["train", self.root / "experiment.yaml", *out, "--device", "cpu"],
            "train-off-grid": lambda: ["train", self.root / "experiment_off_grid.yaml", *out, "--device", "cpu"],
            "train-molecular": lambda: ["train", self.molecular_experiment(), *out, "--device", "cpu"],
            "sample-smc": lambda: ["sample", self.reference("train").out, "--sampler", "smc", "--n", "512",
                                   "--groups", "4", "--mcmc-steps", "2", *out, "--device", "cpu"],
            "sample-langevin": lambda: ["sample", self.reference("train").out, "--sampler", "langevin", "--n", "64",
                                        "--langevin-steps", "300", "--record-every", "50", *out, "--device", "cpu"],
            **{f"run-{short}": lambda workflow=workflow: ["run", f"workflows/{workflow}.yaml", "--preset", "smoke",
                                                          *out, "--device", "cpu"]
               for short, workflow in WORKFLOWS.items()},
        }
        return commands[name]()

    def reference(self, name: str) -> Reference:
        if name not in self._references:
            out = self.root / "uninterrupted" / name
            self._references[name] = run_to_completion(self.args(name, out), out)
        return self._references[name]

    def molecular_experiment(self) -> Path:
        """A molecular experiment on 60 jittered alanine-dipeptide frames (written on first use)."""
        path = self.root / "molecular.yaml"
        if not path.exists():
            from boltzclf.openmm import load_system

            system = load_system(VACUUM)
            rng = np.random.default_rng(0)
            frames = system.positions[None] + 0.01 * rng.standard_normal((60, system.n_atoms, 3))
            mdtraj.Trajectory(frames.astype(np.float32), system.mdtraj_topology).save_dcd(str(self.root / "frames.dcd"))
            system.close()
            path.write_text(MOLECULAR.format(system=VACUUM, trajectory=self.root / "frames.dcd"))
        return path


@pytest.fixture(scope="module")
def commands(tmp_path_factory) -> Commands:
    return Commands(tmp_path_factory.mktemp("kill_anywhere"))


@pytest.fixture(scope="module", autouse=True)
def report_survivors(request):
    """Print how many kill points were survived, per command, when the module is done (with ``-v``:
    each of them)."""
    yield
    counts = Counter(command for command, _ in SURVIVED)
    line = (f"kill-anywhere: {len(SURVIVED)} kill points survived ("
            + ", ".join(f"{command} {n}" for command, n in sorted(counts.items())) + ")")
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
            reporter.write_line(line)
            if request.config.option.verbose > 0:
                for command, kill in SURVIVED:
                    reporter.write_line(f"  {command}: {kill}")


def survive(commands: Commands, name: str, kills: list, tmp_path: Path, record: bool = True) -> Path:
    """Kill ``name``'s command at ``kills`` in turn, finish it, and compare it bitwise with the
    uninterrupted run (``record``: count its kill points in :data:`SURVIVED`); returns the resumed
    run's directory."""
    reference = commands.reference(name)
    out = tmp_path / name
    done = kill_and_resume(commands.args(name, out), out, kills, reference)
    compare_run_dirs(reference.out, out)
    if record:
        SURVIVED.extend((name, kill) for kill in done)
    return out


# ----------------------------------------------------------------------------------------------------
# The default (fast) subset: one or two kill points per cheap command
# ----------------------------------------------------------------------------------------------------

FAST = [
    ("train", [AtWrite("checkpoint.pt", 2, before=True), random_time()]),  # log lines past the checkpoint
]


@pytest.mark.parametrize("name, kills", FAST, ids=[name for name, _ in FAST])
def test_killed_run_resumes_bitwise(commands, tmp_path, name, kills):
    survive(commands, name, kills, tmp_path)


# ----------------------------------------------------------------------------------------------------
# The full set
# ----------------------------------------------------------------------------------------------------

SLOW = [
    ("simulate-openmm", [AtWrite("checkpoint.pt", 3, before=True)]),  # chunk 1 written, its checkpoint not
    ("simulate-torch-remd", [AtWrite("chunks/chunk_00001.pt")]),  # same window, replica exchange
    ("simulate-openmm", [AtWrite("chunks/chunk_00001.pt"), random_time(), random_time(),
                         AtWrite("trajectory.dcd"), AtWrite("results.json", before=True)]),
    ("simulate-torch", [AtWrite("checkpoint.pt", 2), AtWrite("chunks/chunk_00001.pt", before=True),
                        random_time(), AtWrite("energies.npz")]),
    ("simulate-torch-remd", [AtWrite("chunks/chunk_00000.pt", before=True), random_time(),
                             AtWrite("energies.npz", before=True)]),
    ("train", [random_time(), random_time(), AtWrite("checkpoint.pt", 1), AtWrite("results.json", before=True)]),
    ("train-off-grid", [AtWrite("checkpoint.pt", 1), random_time()]),
    ("train-molecular", [AtWrite("checkpoint.pt", 1, before=True), random_time()]),
    ("sample-smc", [random_time(), AtWrite("samples.npz"), AtWrite("results.json", before=True)]),
    ("sample-langevin", [random_time(), AtWrite("diagnostics.json")]),
    ("run-gmm", [AtWrite("dsm/checkpoint.pt", 1, before=True), AtWrite("dsm/results.json"), random_time(),
                 AtWrite("results.json", before=True)]),
    ("run-reference", [AtWrite("dynamics/checkpoint.pt", 2), AtWrite("dynamics/chunks/chunk_00000.pt"),
                       AtWrite("dynamics/results.json", before=True), AtWrite("results.json", before=True)]),
    ("run-solvation", [AtWrite("gb_charges/dynamics/chunks/chunk_00000.pt"),
                       AtWrite("gb_charges/learned/pretrain/checkpoint.pt", 1),
                       AtWrite("gb_charges/learned/dsm/estimate.json"), AtWrite("full_gb/dynamics/checkpoint.pt", 2),
                       AtWrite("full_gb/learned/diffclf_ends/checkpoint.pt", 1, before=True)]),
    ("run-gmm-smc", [AtWrite("two_modes/dsm/checkpoint.pt", 1), AtWrite("two_modes/diffclf/smc.json", before=True),
                     AtWrite("mog40/pretrain/checkpoint.pt", 1), random_time(), AtWrite("results.json", before=True)]),
    ("run-boltzmann-generator", [AtWrite("reference/dynamics/chunks/chunk_00000.pt"),
                                 AtWrite("reference/report.png"),  # the reference's results.json not yet written
                                 AtWrite("pretrain/checkpoint.pt", 1), AtWrite("dsm/smc.npz"),
                                 AtWrite("diffclf/validation.json", before=True),
                                 AtWrite("cg_dsm/cg_langevin.json", before=True)]),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, kills", SLOW, ids=[name for name, _ in SLOW])
def test_killed_run_resumes_bitwise_everywhere(commands, tmp_path, name, kills):
    survive(commands, name, kills, tmp_path)


PT_KILLS = [AtWrite("tempering_setup.json", before=True),  # equilibrated, set-up not yet recorded: redone
            OnFile("tempering_setup.json", round(_DELAYS.uniform(0.1, 1.0), 3)), random_time(), random_time()]


def _openmm_testdata():
    """``tests/openmm/openmm_testdata.py`` (its OpenMM re-evaluation of stored energies)."""
    path = REPO / "tests" / "openmm" / "openmm_testdata.py"
    spec = importlib.util.spec_from_file_location("kill_anywhere_openmm_testdata", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _storage(out: Path) -> dict | None:
    """The production iterations openmmtools had stored in ``out`` (None before its set-up finished)."""
    import netCDF4

    if not (out / "tempering_setup.json").exists():
        return None
    with netCDF4.Dataset(out / "tempering.nc") as data, netCDF4.Dataset(out / "tempering_checkpoint.nc") as ckpt:
        last = int(data.variables["last_iteration"][0])
        return {"last": last, "states": np.array(data.variables["states"][: last + 1]),
                "energies": np.array(data.variables["energies"][: last + 1]),
                "positions": np.array(ckpt.variables["positions"][: last + 1])}


def _block_mean(x: np.ndarray, blocks: int = 10) -> tuple[float, float]:
    """Mean and its standard error from ``blocks`` contiguous block means."""
    means = np.array([b.mean() for b in np.array_split(x, blocks)])
    return float(means.mean()), float(means.std(ddof=1) / np.sqrt(blocks))


@pytest.mark.slow
def test_parallel_tempering_statistically(commands, tmp_path):
    """openmmtools parallel tempering, killed during set-up, right after it and twice at random, then
    finished: compared statistically, not bitwise, with an uninterrupted run.

    openmmtools seeds the integrators' Langevin noise at random and keeps no random state in its
    storage (and numpy's swap generator is reseeded on every start), so two runs, interrupted or not,
    differ bitwise. What is checked instead: every iteration stored before a kill is still there,
    unchanged, after the resume (nothing rewritten, nothing skipped); the storage ends at exactly the
    requested iteration; the trajectory has the uninterrupted run's frame count and time grid; the
    stored reduced energies equal OpenMM's re-evaluation of the stored frames; and the mean reduced
    energy at the target temperature agrees with the uninterrupted run's within 6 block standard errors.
    """
    name = "simulate-openmm-pt"
    reference = commands.reference(name)
    out = tmp_path / name
    before = []
    done = kill_and_resume(commands.args(name, out), out, PT_KILLS, reference,
                           after_kill=lambda: before.append(_storage(out)))
    after = _storage(out)
    n_frames = 100  # 0.01 ns every 0.1 ps
    assert after["last"] == n_frames
    for stored in filter(None, before):
        k = stored["last"] + 1
        for key in ("states", "energies", "positions"):
            np.testing.assert_array_equal(after[key][:k], stored[key], err_msg=f"{key} of iterations < {k}")
    resumed, uninterrupted = (np.load(d / "energies.npz") for d in (out, reference.out))
    np.testing.assert_array_equal(resumed["time"], uninterrupted["time"])
    assert resumed["reduced_energy"].shape == uninterrupted["reduced_energy"].shape == (n_frames,)
    assert mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb")).n_frames == n_frames
    _openmm_testdata().assert_stored_energies_match(out, VACUUM)
    (a, se_a), (b, se_b) = (_block_mean(e["reduced_energy"]) for e in (resumed, uninterrupted))
    assert abs(a - b) <= 6 * np.hypot(se_a, se_b), (a, se_a, b, se_b)
    SURVIVED.extend((name, kill) for kill in done)


# ----------------------------------------------------------------------------------------------------
# Interrupted writes: their temporary files neither count as work nor stay behind
# ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_killed_while_writing_its_metadata_resumes_with_metadata(commands, tmp_path):
    survive(commands, "train", [AtWrite("metadata.json", before=True)], tmp_path, record=False)


@pytest.mark.slow
def test_resumed_run_leaves_no_temporary_files(commands, tmp_path):
    out = survive(commands, "simulate-openmm", [AtWrite("checkpoint.pt", 2, before=True)], tmp_path, record=False)
    assert stray_temporaries(out) == []
