"""Fuzzed malformed inputs (issue 13, item 4): every one must end with exit status 2, ONE message on
stderr naming the file / key / atom / option at fault, no traceback, and every pre-existing output
byte-identical (see ``fuzz_support.py`` for what exactly is checked).

Explicit cases (``CASES``; counts per category in ``CASES_BY_CATEGORY``, total ``N_EXPLICIT_CASES``)
cover system specs, PDBs, trajectories, workflow YAML, experiment YAML, checkpoints and CLI options.
Every case points ``--out`` at a pre-existing output directory, and also watches the run directory it
reads or resumes. Cases that fail because of a defect in a module outside this suite's remit are
``xfail(strict=True)`` with the owner and the defect in the reason: fix the defect, drop the marker.

Property-based part (hypothesis, fixed examples: ``derandomize=True``; ``HYPOTHESIS_EXAMPLES`` gives
the example counts of the fast run and of the ``slow`` run): random mutations of a valid experiment
(also embedded in a workflow) and of valid system specs (unknown key, dropped required key,
wrong-typed, NaN/inf, negative and beyond-64-bit values), random bytes as each kind of input file,
non-positive and huge counts for CLI options, and arbitrary values at every config key checked at
the validation layer (a ConfigError naming the key, or a config holding only finite numbers).
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
import yaml
from fuzz_support import (
    EXPERIMENT_TEXT,
    PDB_SPEC_TEXT,
    SPEC_TEXT,
    WORKFLOW_TEXT,
    existing_output,
    refuse,
    snapshot,
)

from boltzclf.core.config import from_mapping
from boltzclf.core.errors import ConfigError
from boltzclf.openmm.spec import OpenMMToolsSource, PDBSource, SystemSpec
from boltzclf.pipelines.sampling import SampleConfig
from boltzclf.training.config import ExperimentConfig

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

# ----------------------------------------------------------------------------------------------------
# Explicit cases
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """``build(inputs, tmp, out) -> (argv, needles, extra watched paths)``; ``out`` is a pre-existing
    output directory (watched). ``owner``: the xfail reason (the file at fault and its defect)."""

    category: str
    name: str
    build: Callable
    owner: str | None = None


CASES: list[Case] = []


def case(category: str, name: str, owner: str | None = None):
    def register(build):
        CASES.append(Case(category, name, build, owner))
        return build
    return register


def noise(n: int, seed: int = 0) -> bytes:
    """``n`` fixed pseudo-random bytes."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def validate_energy(spec: Path, out: Path, *extra) -> list:
    return ["validate-energy", spec, "--out", out, "--n", "2", "--device", "cpu", "--no-progress", *extra]


def simulate(spec: Path, out: Path, *extra) -> list:
    """A run that would take well under a second if it were (wrongly) accepted."""
    return ["simulate", spec, "--out", out, "--no-progress", "--no-minimize", "--equilibration-ps", "0",
            *(extra or ("--ns", "0.0001"))]


def pmf(traj: Path, spec: Path, out: Path, *extra) -> list:
    return ["pmf", traj, "--system", spec, "--out", out, "--bootstrap", "2", "--blocks", "2", *extra]


# --- system specs ------------------------------------------------------------------------------------

def _spec_case(name: str, text: str | bytes, needles, command=validate_energy, owner=None):
    @case("spec", name, owner)
    def build(inputs, tmp, out):
        spec = write(tmp / f"spec_{name}.yaml", text)
        return command(spec, out), [f"spec_{name}.yaml", *needles], []


_spec_case("empty-file", "", ["top level must be a mapping"])
_spec_case("malformed-yaml", SPEC_TEXT.replace("name: aldp", "name: [aldp"), ["malformed YAML", "line"])
_spec_case("top-level-list", "- aldp\n- vacuum\n", ["top level must be a mapping"], command=simulate)
_spec_case("binary-file", bytes(range(256)) * 3, ["not a UTF-8 text file"])
_spec_case("deeply-nested", "source: " + "[" * 5000, ["malformed YAML"])
_spec_case("missing-kind", SPEC_TEXT.replace("kind: openmmtools\n", ""), ["kind"])
_spec_case("unknown-kind", SPEC_TEXT.replace("kind: openmmtools", "kind: amber"), ["kind", "'amber'"])
_spec_case("unknown-key", SPEC_TEXT + "solvent: tip3p\n", ["'solvent'"], command=simulate)
_spec_case("path-key", SPEC_TEXT + "path: /etc\n", ["'path'"])
_spec_case("mixed-type-keys", SPEC_TEXT + "1: one\nzeta: 2\n", ["'zeta'"])
_spec_case("missing-temperature", SPEC_TEXT.replace("temperature: 300.0\n", ""), ["'temperature'"])
_spec_case("negative-temperature", SPEC_TEXT.replace("300.0", "-5.0"), ["temperature"])
_spec_case("nan-temperature", SPEC_TEXT.replace("300.0", ".nan"), ["temperature"])
_spec_case("inf-temperature", SPEC_TEXT.replace("300.0", ".inf"), ["temperature"], command=simulate)
_spec_case("string-temperature", SPEC_TEXT.replace("300.0", "warm"), ["temperature", "'warm'"])
_spec_case("empty-name", SPEC_TEXT.replace("name: aldp", "name: ''"), ["name"])
_spec_case("missing-source", SPEC_TEXT.replace(
    "source: {testsystem: AlanineDipeptideVacuum, constraints: none}\n", ""), ["source"])
_spec_case("source-is-list", SPEC_TEXT.replace("{testsystem: AlanineDipeptideVacuum, constraints: none}",
                                               "[AlanineDipeptideVacuum]"), ["source", "list"])
_spec_case("source-unknown-key", SPEC_TEXT.replace("constraints: none", "constraints: none, box: 3"),
           ["source", "'box'"])
_spec_case("unknown-testsystem", SPEC_TEXT.replace("AlanineDipeptideVacuum", "NoSuchSystem"),
           ["source.testsystem", "NoSuchSystem"])
_spec_case("zero-atom-testsystem", SPEC_TEXT.replace("AlanineDipeptideVacuum", "TestSystem"),
           ["source.testsystem"])
_spec_case("bad-constraints", SPEC_TEXT.replace("constraints: none", "constraints: some"),
           ["source.constraints", "'some'"])


def _pdb_spec_case(name: str, spec_text: str, needles, owner=None, setup=None):
    """A PDB spec in its own folder next to a valid ``aldp.pdb`` (``setup(folder)`` adds files)."""
    @case("spec", name, owner)
    def build(inputs, tmp, out):
        folder = tmp / "data" / "molecule"
        write(folder / "aldp.pdb", inputs.pdb_text)
        if setup is not None:
            setup(folder, inputs)
        spec = write(folder / f"spec_{name}.yaml", spec_text)
        return validate_energy(spec, out), [f"spec_{name}.yaml", *needles], []


_pdb_spec_case("pdb-climbs-out-with-dotdot", PDB_SPEC_TEXT.replace("pdb: aldp.pdb", "pdb: ../outside/aldp.pdb"),
               ["source.pdb", "../outside/aldp.pdb"],
               setup=lambda folder, inputs: write(folder.parent / "outside" / "aldp.pdb", inputs.pdb_text))
_pdb_spec_case("forcefield-climbs-out", PDB_SPEC_TEXT.replace("[amber14-all.xml]", "[../ff/amber14-all.xml]"),
               ["source.forcefield"],
               setup=lambda folder, inputs: write(folder.parent / "ff" / "amber14-all.xml", "<ForceField/>\n"))
_pdb_spec_case("pdb-missing", PDB_SPEC_TEXT.replace("pdb: aldp.pdb", "pdb: nothere.pdb"),
               ["source.pdb", "nothere.pdb", "not found"])
_pdb_spec_case("pdb-is-a-directory", PDB_SPEC_TEXT.replace("pdb: aldp.pdb", "pdb: sub"), ["source.pdb", "sub"],
               setup=lambda folder, inputs: (folder / "sub").mkdir(exist_ok=True))
_pdb_spec_case("forcefield-empty", PDB_SPEC_TEXT.replace("[amber14-all.xml]", "[]"), ["source.forcefield"])
_pdb_spec_case("forcefield-missing", PDB_SPEC_TEXT.replace("amber14-all.xml", "amber99-nowhere.xml"),
               ["source.forcefield", "amber99-nowhere.xml"])
_pdb_spec_case("forcefield-not-a-list", PDB_SPEC_TEXT.replace("[amber14-all.xml]", "{a: 1}"),
               ["source.forcefield"])
_pdb_spec_case("negative-cutoff", PDB_SPEC_TEXT.replace("nonbonded_cutoff: null", "nonbonded_cutoff: -1.0"),
               ["source.nonbonded_cutoff"])


@case("spec", "forcefield-malformed-xml")
def _(inputs, tmp, out):
    folder = tmp / "molecule"
    write(folder / "aldp.pdb", inputs.pdb_text)
    write(folder / "local.xml", "<ForceField><Atom")
    spec = write(folder / "spec.yaml", PDB_SPEC_TEXT.replace("amber14-all.xml", "local.xml"))
    return validate_energy(spec, out), ["local.xml"], []


@case("spec", "spec-file-missing")
def _(inputs, tmp, out):
    return simulate(tmp / "nowhere.yaml", out), ["nowhere.yaml", "not found"], []


@case("spec", "pdb-absolute-outside")
def _(inputs, tmp, out):
    outside = write(tmp / "elsewhere" / "aldp.pdb", inputs.pdb_text)
    folder = tmp / "molecule"
    spec = write(folder / "spec.yaml", PDB_SPEC_TEXT.replace("pdb: aldp.pdb", f"pdb: {outside}"))
    return validate_energy(spec, out), ["spec.yaml", "source.pdb", str(outside)], []


# --- PDB contents -----------------------------------------------------------------------------------

def _atom_lines(text: str) -> list[int]:
    return [i for i, line in enumerate(text.splitlines(keepends=True)) if line.startswith(("ATOM", "HETATM"))]


def _with_coordinate(text: str, atom: int, column: str) -> str:
    """``text`` with the x coordinate (columns 31-38) of atom ``atom`` replaced by ``column``."""
    lines = text.splitlines(keepends=True)
    i = _atom_lines(text)[atom]
    lines[i] = lines[i][:30] + column.rjust(8)[:8] + lines[i][38:]
    return "".join(lines)


def _pdb_case(name: str, make: Callable[[str], str | bytes], needles, owner=None):
    @case("pdb", name, owner)
    def build(inputs, tmp, out):
        folder = tmp / "molecule"
        pdb = write(folder / "aldp.pdb", make(inputs.pdb_text))
        spec = write(folder / "spec.yaml", PDB_SPEC_TEXT)
        return validate_energy(spec, out), [str(pdb), *needles], []


_pdb_case("nan-coordinate", lambda t: _with_coordinate(t, 3, "nan"), ["atom", "H3"])
_pdb_case("inf-coordinate", lambda t: _with_coordinate(t, 7, "inf"), ["atom"])
_pdb_case("unparsable-coordinate", lambda t: _with_coordinate(t, 0, "abcde"), ["abcde"])
_pdb_case("unknown-residue", lambda t: t.replace(" ALA ", " XYZ "), ["XYZ"])
_pdb_case("missing-hydrogens", lambda t: "".join(
    line for line in t.splitlines(keepends=True)
    if not (line.startswith(("ATOM", "HETATM")) and line[76:78].strip() == "H")), ["ACE1"])
_pdb_case("truncated-mid-record", lambda t: "".join(t.splitlines(keepends=True)[:_atom_lines(t)[10]])
          + t.splitlines(keepends=True)[_atom_lines(t)[10]][:20], [])
_pdb_case("empty-file", lambda t: "", [])
_pdb_case("no-atoms", lambda t: "REMARK   1 nothing here\nEND\n", [])
_pdb_case("binary-garbage", lambda t: noise(3000, seed=1), [])


# --- trajectories -----------------------------------------------------------------------------------

def _traj_case(name: str, make: Callable, needles, command="pmf", owner=None):
    """``make(inputs, tmp) -> trajectory path``; command ``pmf`` or ``validate-energy --traj``."""
    @case("trajectory", name, owner)
    def build(inputs, tmp, out):
        traj = make(inputs, tmp)
        argv = (pmf(traj, inputs.spec, out) if command == "pmf"
                else validate_energy(inputs.spec, out, "--traj", traj))
        return argv, [traj.name, *needles], []


def _truncated(inputs, tmp, keep: float) -> Path:
    data = inputs.traj.read_bytes()
    return write(tmp / "truncated.dcd", data[:int(len(data) * keep)])


def _nan_frames(inputs, tmp) -> Path:
    frames = inputs.frames.copy()
    frames[2, 5] = np.nan
    return inputs.write_dcd(tmp / "nan_frame.dcd", frames)


_traj_case("missing-file", lambda i, t: t / "none.dcd", ["not found"])
_traj_case("random-bytes", lambda i, t: write(t / "random.dcd", noise(4000)), [])
_traj_case("empty-file", lambda i, t: write(t / "empty.dcd", b""), [])
_traj_case("truncated-header", lambda i, t: write(t / "header.dcd", i.traj.read_bytes()[:50]), [])
_traj_case("truncated-mid-frame", lambda i, t: _truncated(i, t, 0.6), ["counts 5 frames", "cut short"])
_traj_case("wrong-atom-count", lambda i, t: i.write_dcd(t / "ten_atoms.dcd", atoms=range(10)),
           ["has 10 atoms", "has 22"])
_traj_case("nan-coordinates", _nan_frames, ["frame 2", "non-finite"])
_traj_case("unknown-extension", lambda i, t: write(t / "frames.traj", i.traj.read_bytes()), ["extension"])
_traj_case("text-as-xtc", lambda i, t: write(t / "frames.xtc", "not an xtc file\n"), [])
_traj_case("run-dir-without-dcd", lambda i, t: (t / "empty_run").mkdir() or t / "empty_run", ["trajectory"])
_traj_case("validate-energy-random-bytes", lambda i, t: write(t / "random.dcd", noise(4000)),
           ["--traj"], command="validate-energy")
_traj_case("validate-energy-wrong-atoms", lambda i, t: i.write_dcd(t / "ten_atoms.dcd", atoms=range(10)),
           ["--traj", "has 10 atoms"], command="validate-energy")
_traj_case("validate-energy-nan-coordinates", _nan_frames, ["--traj", "frame 2"], command="validate-energy")


@case("trajectory", "missing-topology")
def _(inputs, tmp, out):
    return pmf(inputs.traj, inputs.spec, out, "--top", tmp / "none.pdb"), ["none.pdb"], []


def _log_weights_case(name: str, make: Callable, needles, owner=None):
    @case("trajectory", name, owner)
    def build(inputs, tmp, out):
        path = make(tmp)
        return pmf(inputs.traj, inputs.spec, out, "--log-weights", path), [*needles], []


_log_weights_case("log-weights-wrong-length", lambda t: np.save(t / "lw.npy", np.zeros(3)) or t / "lw.npy",
                  ["--log-weights", "lw.npy", "(3,)"])
_log_weights_case("log-weights-not-npy", lambda t: write(t / "lw.npy", b"junk bytes"), ["--log-weights", "lw.npy"])
_log_weights_case("log-weights-nan", lambda t: np.save(t / "lw.npy", np.full(5, np.nan)) or t / "lw.npy",
                  ["log-weights", "NaN"])
_log_weights_case("log-weights-missing", lambda t: t / "none.npy", ["--log-weights", "none.npy"])
_log_weights_case("log-weights-empty-file", lambda t: write(t / "lw.npy", b""), ["--log-weights", "lw.npy"])


def _molecular_experiment(inputs, tmp: Path, trajectory: Path, extra: str = "") -> Path:
    text = (f"data: {{system: {inputs.spec}, trajectory: {trajectory}, validation_fraction: 0.2{extra}}}\n"
            "grid: {kind: log_snr, n_levels: 8, t_min: 1.0e-3}\n"
            "model: {kind: pairwise, hidden: 8, n_layers: 1, time_dim: 8}\n"
            "training: {steps: 2, batch_size: 4, checkpoint_every: 2, log_every: 2, dataset_size: 0}\n"
            "evaluation: {n_samples: 16, n_levels: 2}\n")
    return write(tmp / "molecular.yaml", text)


@case("trajectory", "train-data-nan-coordinates")
def _(inputs, tmp, out):
    config = _molecular_experiment(inputs, tmp, _nan_frames(inputs, tmp))
    return ["train", config, "--out", out, "--device", "cpu"], ["nan_frame.dcd"], []


@case("trajectory", "train-data-wrong-atom-count")
def _(inputs, tmp, out):
    config = _molecular_experiment(inputs, tmp, inputs.write_dcd(tmp / "ten_atoms.dcd", atoms=range(10)))
    return ["train", config, "--out", out, "--device", "cpu"], ["ten_atoms.dcd"], []


@case("trajectory", "train-data-atom-index-out-of-range")
def _(inputs, tmp, out):
    config = _molecular_experiment(inputs, tmp, inputs.traj, ", atoms: [0, 4, 99]")
    return ["train", config, "--out", out, "--device", "cpu"], ["data.atoms", "99"], []


# --- workflow YAML ----------------------------------------------------------------------------------

def _workflow_case(name: str, text: str, needles, extra=(), owner=None):
    @case("workflow", name, owner)
    def build(inputs, tmp, out):
        path = write(tmp / f"wf_{name}.yaml", text)
        return ["run", path, "--out", out, "--device", "cpu", *extra], [f"wf_{name}.yaml", *needles], []


_workflow_case("missing-workflow-key", WORKFLOW_TEXT.replace("workflow: compare_losses\n", ""), ["'workflow'"])
_workflow_case("unknown-workflow", WORKFLOW_TEXT.replace("compare_losses", "compare_everything"),
               ["'workflow'", "compare_everything"])
_workflow_case("unknown-preset", WORKFLOW_TEXT, ["preset", "'huge'"], extra=("--preset", "huge"))
_workflow_case("presets-not-a-mapping", WORKFLOW_TEXT.split("presets:")[0] + "presets: [quick]\n", ["presets"],
               extra=("--preset", "quick"))
_workflow_case("preset-not-a-mapping", WORKFLOW_TEXT.replace(
    "quick: {experiment: {training: {steps: 2}}}", "quick: 3"), ["presets.quick"], extra=("--preset", "quick"))
_workflow_case("unknown-top-level-key", WORKFLOW_TEXT + "extras: 1\n", ["'extras'"])
_workflow_case("preset-unknown-key", WORKFLOW_TEXT.replace("{steps: 2}", "{stepz: 2}"),
               ["experiment.training", "'stepz'"], extra=("--preset", "quick"))
_workflow_case("steps-not-an-integer", WORKFLOW_TEXT.replace("steps: 4", "steps: many"),
               ["experiment.training.steps", "'many'"])
_workflow_case("nan-learning-rate", WORKFLOW_TEXT.replace("steps: 4,", "steps: 4, lr: .nan,"),
               ["experiment.training.lr"])
_workflow_case("negative-method-k", WORKFLOW_TEXT.replace("dsm: {kind: dsm, k: 2}", "dsm: {kind: dsm, k: -2}"),
               ["methods.dsm.k"])
_workflow_case("methods-empty", WORKFLOW_TEXT.replace(
    "  dsm: {kind: dsm, k: 2}\n  diffclf: {kind: diffclf, k: 2}\n", "").replace("methods:\n", "methods: {}\n"),
    ["methods"])
_workflow_case("methods-a-list", WORKFLOW_TEXT.replace(
    "methods:\n  dsm: {kind: dsm, k: 2}\n  diffclf: {kind: diffclf, k: 2}\n", "methods: [dsm, diffclf]\n"),
    ["methods", "list"])
_workflow_case("warm-start-missing", WORKFLOW_TEXT.replace("steps: 4,", "steps: 4, warm_start: /nonexistent/c.pt,"),
               ["experiment.training.warm_start", "/nonexistent/c.pt"])


@case("workflow", "bad-device")
def _(inputs, tmp, out):
    return ["run", inputs.workflow, "--out", out, "--device", "tpu"], ["--device", "tpu"], []


@case("workflow", "workflow-file-missing")
def _(inputs, tmp, out):
    return ["run", tmp / "none.yaml", "--out", out], ["none.yaml", "not found"], []


@case("workflow", "out-holds-another-run")
def _(inputs, tmp, out):
    other = tmp / "other_run"
    shutil.copytree(inputs.workflow_run, other)
    path = write(tmp / "wf.yaml", WORKFLOW_TEXT.replace("description: fuzz base", "description: another"))
    return ["run", path, "--out", other, "--device", "cpu"], ["--out", "different config"], [other]


# --- experiment YAML (boltzclf train) ----------------------------------------------------------------

def _experiment_case(name: str, text: str | bytes, needles, owner=None, names_file=True):
    @case("experiment", name, owner)
    def build(inputs, tmp, out):
        path = write(tmp / f"exp_{name}.yaml", text)
        return ["train", path, "--out", out, "--device", "cpu"], [f"exp_{name}.yaml"] * names_file + needles, []


E = EXPERIMENT_TEXT
_experiment_case("malformed-yaml", E.replace("target: {", "target: {{"), ["malformed YAML"])
_experiment_case("binary-file", b"\xff\xfe\x00target" + bytes(range(128, 256)), ["not a UTF-8 text file"])
_experiment_case("unknown-section", E + "optimiser: {kind: sgd}\n", ["'optimiser'"])
_experiment_case("unknown-key", E.replace("dim: 2,", "dim: 2, width: 3,"), ["target", "'width'"])
_experiment_case("bad-choice", E.replace("two_modes", "three_modes"), ["target.name", "'three_modes'"])
_experiment_case("zero-dim", E.replace("dim: 2", "dim: 0"), ["target.dim"])
_experiment_case("float-for-int", E.replace("dim: 2", "dim: 2.5"), ["target.dim", "2.5"])
_experiment_case("bool-for-int", E.replace("steps: 4", "steps: true"), ["training.steps"])
_experiment_case("infinite-lr", E.replace("lr: 1.0e-3", "lr: .inf"), ["training.lr"])
_experiment_case("infinite-separation", E.replace("separation: 5.0", "separation: .inf"), ["target.separation"])
_experiment_case("seed-beyond-64-bit", E.replace("seed: 0}\n", "seed: 100000000000000000000000}\n"),
                 ["training.seed"])
_experiment_case("evaluation-seed-beyond-64-bit", E.replace("seed: 1234", "seed: 100000000000000000000000"),
                 ["evaluation.seed"])
_experiment_case("dim-beyond-64-bit", E.replace("dim: 2", "dim: 100000000000000000000000"), ["target.dim"])
_experiment_case("section-is-list", E.replace(
    "model: {kind: mlp, hidden: 16, n_layers: 1, time_dim: 8, embedding: positional}", "model: [16, 1]"),
    ["model", "list"])
_experiment_case("interpolant-without-end-target", E.replace("process: {kind: vp, beta_min: 0.1, beta_max: 20.0}",
                                                             "process: {kind: interpolant}"), ["end_target"])
_experiment_case("mixed-type-keys", E + "1: 2\nzzz: 3\n", ["'zzz'"])
_experiment_case("data-system-missing",  # the message names the missing spec, not the experiment file
                 E.replace("target: {name: two_modes, dim: 2, separation: 5.0, seed: 0, heavy_weight: 0.6}",
                           "data: {system: /nonexistent/spec.yaml, trajectory: t.dcd}")
                 .replace("kind: mlp", "kind: pairwise"), ["/nonexistent/spec.yaml"], names_file=False)
_experiment_case("warm-start-missing", E.replace("seed: 0}\n", "seed: 0, warm_start: /nonexistent/c.pt}\n"),
                 ["training.warm_start", "/nonexistent/c.pt"])


@case("experiment", "experiment-file-missing")
def _(inputs, tmp, out):
    return ["train", tmp / "none.yaml", "--out", out], ["none.yaml", "not found"], []


@case("experiment", "out-is-a-file")
def _(inputs, tmp, out):
    target = write(tmp / "results.txt", "keep me\n")
    return ["train", inputs.experiment, "--out", target, "--device", "cpu"], ["--out", "results.txt"], [target]


@case("experiment", "warm-start-truncated")
def _(inputs, tmp, out):
    data = (inputs.run / "checkpoint.pt").read_bytes()
    ckpt = write(tmp / "warm.pt", data[:len(data) // 2])
    path = write(tmp / "exp.yaml", E.replace("seed: 0}\n", f"seed: 0, warm_start: {ckpt}}}\n"))
    return ["train", path, "--out", tmp / "new_run", "--device", "cpu"], ["training.warm_start", "warm.pt"], \
        [tmp / "new_run"]


@case("experiment", "warm-start-other-architecture")
def _(inputs, tmp, out):
    path = write(tmp / "exp.yaml", E.replace("hidden: 16", "hidden: 24").replace(
        "seed: 0}\n", f"seed: 0, warm_start: {inputs.run / 'checkpoint.pt'}}}\n"))
    return ["train", path, "--out", tmp / "new_run", "--device", "cpu"], \
        ["training.warm_start", "checkpoint.pt", "shape"], [tmp / "new_run", inputs.run]


# --- checkpoints ------------------------------------------------------------------------------------

def _edit(fn):
    def mutate(path: Path) -> None:
        state = torch.load(path, weights_only=True)
        fn(state)
        torch.save(state, path)
    return mutate


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


class _NotATensor:
    pass


CHECKPOINT_DEFECTS = {
    "truncated": _truncate,
    "random-bytes": lambda p: p.write_bytes(noise(5000, seed=2)),
    "empty": lambda p: p.write_bytes(b""),
    "untagged": lambda p: torch.save({"weights": torch.zeros(3)}, p),
    "pickled-object": lambda p: torch.save({"format": "boltzclf-checkpoint/1", "x": _NotATensor()}, p),
    "missing-ema": _edit(lambda s: s.pop("ema")),
    "missing-config": _edit(lambda s: s.pop("config")),
    "missing-optimizer": _edit(lambda s: s.pop("optimizer")),
    "step-not-an-integer": _edit(lambda s: s.update(step="four")),
    "nan-weights": _edit(lambda s: [v.fill_(float("nan")) for v in s["ema"].values() if v.is_floating_point()]),
    "wrong-shape": _edit(lambda s: s["ema"].update({"free_energies": torch.zeros(3)})),
    "bad-rng-state": _edit(lambda s: s["rng"].update(generator=torch.zeros(3))),
    "config-unknown-key": _edit(lambda s: s["config"]["training"].update(stepz=3)),
}
#: (command, defect, words the message must hold besides the checkpoint's path)
CHECKPOINT_CASES = [
    ("evaluate", "truncated", ["not a readable checkpoint"]),
    ("evaluate", "random-bytes", ["not a readable checkpoint"]),
    ("evaluate", "empty", ["not a readable checkpoint"]),
    ("evaluate", "untagged", ["not a boltzclf checkpoint"]),
    ("evaluate", "pickled-object", ["not a readable checkpoint"]),
    ("evaluate", "missing-ema", ["'ema'"]),
    ("evaluate", "step-not-an-integer", ["'step'"]),
    ("evaluate", "nan-weights", ["NaN"]),
    ("evaluate", "wrong-shape", ["free_energies", "shape"]),
    ("evaluate", "config-unknown-key", ["config", "'stepz'"]),
    ("sample", "truncated", ["not a readable checkpoint"]),
    ("sample", "missing-config", ["'config'"]),
    ("sample", "nan-weights", ["NaN"]),
    ("resume", "truncated", ["not a readable checkpoint"]),
    ("resume", "random-bytes", ["not a readable checkpoint"]),
    ("resume", "missing-optimizer", ["'optimizer'"]),
    ("resume", "bad-rng-state", ["'rng'"]),
    ("resume", "wrong-shape", ["free_energies", "shape"]),
]


def _checkpoint_case(command: str, defect: str, needles):
    @case("checkpoint", f"{command}-{defect}")
    def build(inputs, tmp, out):
        run = tmp / "run"
        shutil.copytree(inputs.run, run)
        CHECKPOINT_DEFECTS[defect](run / "checkpoint.pt")
        if command == "evaluate":
            argv = ["evaluate", run, "--out", out, "--device", "cpu"]
        elif command == "sample":
            argv = ["sample", run, "--sampler", "ancestral", "--n", "8", "--out", out, "--device", "cpu"]
        else:  # re-running the training command resumes from the run's checkpoint
            argv = ["train", inputs.experiment, "--out", run, "--device", "cpu"]
        return argv, [str(run / "checkpoint.pt"), *needles], [run]


for _command, _defect, _needles in CHECKPOINT_CASES:
    _checkpoint_case(_command, _defect, _needles)


@case("checkpoint", "evaluate-run-without-checkpoint")
def _(inputs, tmp, out):
    run = tmp / "run"
    shutil.copytree(inputs.run, run)
    (run / "checkpoint.pt").unlink()
    return ["evaluate", run, "--out", out], ["checkpoint.pt", "not found"], [run]


@case("checkpoint", "workflow-resume-truncated")
def _(inputs, tmp, out):
    """A killed workflow (the diffclf method unfinished) whose diffclf checkpoint is cut short."""
    run = tmp / "workflow_run"
    shutil.copytree(inputs.workflow_run, run)
    for name in ("results.json", "report.png", "diffclf/results.json"):
        (run / name).unlink()
    _truncate(run / "diffclf" / "checkpoint.pt")
    return ["run", inputs.workflow, "--out", run, "--device", "cpu"], \
        [str(run / "diffclf" / "checkpoint.pt"), "not a readable checkpoint"], [run]


@case("checkpoint", "resume-unreadable-config-json")
def _(inputs, tmp, out):
    run = tmp / "run"
    shutil.copytree(inputs.run, run)
    write(run / "config.json", '{"target": {"name": "two_')
    return ["train", inputs.experiment, "--out", run, "--device", "cpu"], [str(run / "config.json")], [run]


def _md_resume_case(name: str, damage: Callable[[Path], None], needles, owner=None):
    """A killed ``boltzclf simulate`` run (final outputs not yet written), damaged, then re-run."""
    @case("checkpoint", f"simulate-resume-{name}", owner)
    def build(inputs, tmp, out):
        run = tmp / "md_run"
        shutil.copytree(inputs.md_run, run)
        for final in ("results.json", "trajectory.dcd", "energies.npz", "topology.pdb"):
            (run / final).unlink()
        damage(run)
        return ["simulate", inputs.spec, "--out", run, *inputs.MD_OPTIONS], [*needles], [run]


_md_resume_case("truncated-chunk", lambda run: _truncate(run / "chunks" / "chunk_00001.pt"), ["chunk_00001.pt"])
_md_resume_case("missing-chunk", lambda run: (run / "chunks" / "chunk_00001.pt").unlink(), ["chunk_00001.pt"])
_md_resume_case("truncated-md-checkpoint", lambda run: _truncate(run / "checkpoint.pt"), ["checkpoint.pt"])
_md_resume_case("random-bytes-md-checkpoint", lambda run: CHECKPOINT_DEFECTS["random-bytes"](run / "checkpoint.pt"),
                ["checkpoint.pt"])


# --- CLI options ------------------------------------------------------------------------------------

def _option_case(name: str, argv: Callable, needles, owner=None, watch_run=False):
    """``argv(inputs, tmp, out) -> argv``."""
    @case("option", name, owner)
    def build(inputs, tmp, out):
        return argv(inputs, tmp, out), needles, [inputs.run] if watch_run else []


def _sample(*extra):
    return lambda i, t, o: ["sample", i.run, "--out", o, "--device", "cpu", *extra]


def _evaluate(*extra):
    return lambda i, t, o: ["evaluate", i.run, "--out", o, "--device", "cpu", *extra]


_option_case("sample-n-zero", _sample("--sampler", "smc", "--n", "0"), ["--n"], watch_run=True)
_option_case("sample-n-negative", _sample("--sampler", "ancestral", "--n", "-5"), ["--n"], watch_run=True)
_option_case("sample-n-not-a-number", _sample("--sampler", "ancestral", "--n", "many"), ["--n", "many"])
_option_case("sample-bad-sampler", _sample("--sampler", "mcmc"), ["--sampler", "mcmc"])
_option_case("sample-bad-kernel", _sample("--sampler", "smc", "--kernel", "foo"), ["--kernel", "foo"])
_option_case("sample-groups-zero-smc-start", _sample("--sampler", "langevin", "--n", "8", "--start", "smc",
                                                     "--groups", "0"), ["--groups"], watch_run=True)
_option_case("sample-infinite-step-size", _sample("--sampler", "langevin", "--n", "8", "--step-size", "inf"),
             ["--step-size"])
_option_case("sample-nan-dt", _sample("--sampler", "langevin", "--n", "8", "--dt", "nan"), ["--dt"])
_option_case("sample-negative-friction", _sample("--sampler", "langevin", "--n", "8", "--friction", "-1"),
             ["--friction"])
_option_case("sample-negative-no-resample-last", _sample("--sampler", "smc", "--n", "16", "--no-resample-last", "-1"),
             ["--no-resample-last"])
_option_case("sample-seed-beyond-64-bit", _sample("--sampler", "ancestral", "--n", "8", "--seed", "9" * 25),
             ["--seed"], watch_run=True)
_option_case("sample-threshold-above-one", _sample("--sampler", "smc", "--n", "16", "--resample-threshold", "2"),
             ["--resample-threshold"], watch_run=True)
_option_case("sample-bad-device", _sample("--sampler", "smc", "--n", "16", "--device", "tpu"), ["--device", "tpu"])
_option_case("sample-run-dir-missing", lambda i, t, o: ["sample", t / "nowhere", "--sampler", "smc", "--out", o],
             ["nowhere"])
_option_case("sample-out-missing", lambda i, t, o: ["sample", i.run, "--sampler", "smc"], ["--out"])
_option_case("evaluate-n-samples-zero", _evaluate("--n-samples", "0"), ["--n-samples"])
_option_case("evaluate-n-samples-too-few", _evaluate("--n-samples", "5"), ["--n-samples"], watch_run=True)
_option_case("evaluate-seed-beyond-64-bit", _evaluate("--seed", "9" * 25), ["--seed"], watch_run=True)
_option_case("evaluate-out-is-a-file", lambda i, t, o: ["evaluate", i.run, "--out", o / "notes.txt"],
             ["--out", "notes.txt"])
_option_case("train-bad-device", lambda i, t, o: ["train", i.experiment, "--out", o, "--device", "tpu"],
             ["--device", "tpu"])
_option_case("pmf-zero-bins", lambda i, t, o: pmf(i.traj, i.spec, o, "--bins", "0"), ["--bins"])
_option_case("pmf-negative-blocks", lambda i, t, o: pmf(i.traj, i.spec, o, "--blocks", "-2"), ["--blocks"])
_option_case("pmf-one-bootstrap-replicate", lambda i, t, o: pmf(i.traj, i.spec, o, "--bootstrap", "1"),
             ["bootstrap"])
_option_case("pmf-unknown-cv", lambda i, t, o: pmf(i.traj, i.spec, o, "--cv", "phi,omega9"), ["--cv", "omega9"])
_option_case("pmf-three-cvs", lambda i, t, o: pmf(i.traj, i.spec, o, "--cv", "phi,psi,phi"), ["--cv"])
_option_case("pmf-negative-seed", lambda i, t, o: pmf(i.traj, i.spec, o, "--seed", "-1"), ["--seed"])
_option_case("pmf-system-missing", lambda i, t, o: pmf(i.traj, t / "none.yaml", o), ["none.yaml"])
_option_case("pmf-zero-temperature", lambda i, t, o: pmf(i.traj, i.spec, o, "--temperature", "0"),
             ["--temperature"])
_option_case("validate-energy-n-zero", lambda i, t, o: ["validate-energy", i.spec, "--out", o, "--n", "0"], ["--n"])
_option_case("validate-energy-negative-sigma", lambda i, t, o: ["validate-energy", i.spec, "--out", o,
                                                                 "--sigma", "-1"], ["--sigma"])
_option_case("validate-energy-bad-platform", lambda i, t, o: validate_energy(i.spec, o, "--platform", "Foo"),
             ["--platform", "'Foo'"])
_option_case("validate-energy-negative-seed", lambda i, t, o: validate_energy(i.spec, o, "--seed", "-1"),
             ["--seed"])
_option_case("simulate-ns-zero", lambda i, t, o: simulate(i.spec, o, "--ns", "0"), ["--ns"])
_option_case("simulate-ns-infinite", lambda i, t, o: simulate(i.spec, o, "--ns", "inf"), ["--ns", "finite"])
_option_case("simulate-replicas-zero", lambda i, t, o: simulate(i.spec, o, "--ns", "0.0001", "--replicas", "0"),
             ["--replicas"])
_option_case("simulate-max-temperature-one-replica",
             lambda i, t, o: simulate(i.spec, o, "--ns", "0.0001", "--max-temperature", "400"), ["--max-temperature"])
_option_case("simulate-tempering-bad-platform",
             lambda i, t, o: simulate(i.spec, o, "--ns", "0.0001", "--replicas", "2", "--max-temperature", "400",
                                      "--platform", "Foo"), ["'Foo'"])
_option_case("simulate-bad-engine", lambda i, t, o: simulate(i.spec, o, "--ns", "0.0001", "--engine", "gromacs"),
             ["--engine", "gromacs"])
_option_case("simulate-zero-timestep", lambda i, t, o: simulate(i.spec, o, "--ns", "0.0001", "--timestep-fs", "0"),
             ["--timestep-fs"])
_option_case("simulate-zero-threads", lambda i, t, o: simulate(i.spec, o, "--ns", "0.0001", "--threads", "0"),
             ["--threads"])
_option_case("simulate-torch-zero-walkers",
             lambda i, t, o: simulate(i.spec, o, "--ns", "0.0001", "--engine", "torch", "--walkers", "0",
                                      "--device", "cpu"), ["--walkers"])
_option_case("no-command", lambda i, t, o: [], ["COMMAND"])
_option_case("unknown-command", lambda i, t, o: ["frobnicate"], ["frobnicate"])


N_EXPLICIT_CASES = len(CASES)
CASES_BY_CATEGORY = {c: sum(1 for x in CASES if x.category == c) for c in dict.fromkeys(x.category for x in CASES)}
assert len({(c.category, c.name) for c in CASES}) == N_EXPLICIT_CASES, "case names must be unique"


def _param(c: Case):
    marks = [pytest.mark.xfail(strict=True, reason=f"owner: {c.owner}")] if c.owner else []
    return pytest.param(c, id=f"{c.category}-{c.name}", marks=marks)


@pytest.mark.parametrize("fuzz_case", [_param(c) for c in CASES])
def test_malformed_input_is_refused_cleanly(fuzz_case: Case, fuzz_inputs, tmp_path):
    out = existing_output(tmp_path / "existing_output")
    argv, needles, watch = fuzz_case.build(fuzz_inputs, tmp_path, out)
    refuse(argv, needles, [out, *watch])


def test_the_suite_has_at_least_fifty_explicit_cases():
    assert N_EXPLICIT_CASES >= 50
    assert set(CASES_BY_CATEGORY) == {"spec", "pdb", "trajectory", "workflow", "experiment", "checkpoint", "option"}


# --- data paths: a PDB outside the spec's folder is fine once its folder is named -------------------

def test_pdb_outside_the_spec_folder_is_accepted_under_an_explicit_data_path(fuzz_inputs, tmp_path, monkeypatch):
    from boltzclf.openmm.spec import load_spec

    shared = write(tmp_path / "shared" / "aldp.pdb", fuzz_inputs.pdb_text)
    spec = write(tmp_path / "specs" / "spec.yaml",
                 PDB_SPEC_TEXT.replace("pdb: aldp.pdb", "pdb: ../shared/aldp.pdb"))
    monkeypatch.delenv("BOLTZCLF_DATA_PATH", raising=False)
    refuse(validate_energy(spec, tmp_path / "out"), ["source.pdb", "../shared/aldp.pdb"], [tmp_path / "shared"])
    monkeypatch.setenv("BOLTZCLF_DATA_PATH", str(tmp_path / "shared"))
    assert Path(load_spec(spec).source.pdb).resolve() == shared.resolve()


# --- the real command line ----------------------------------------------------------------------------

def _shell(argv: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "boltzclf", *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120, check=False)


SHELL_CASES = {
    "checkpoint-truncated": "checkpoint-evaluate-truncated",
    "spec-binary": "spec-binary-file",
    "experiment-warm-start-missing": "experiment-warm-start-missing",
    "option-sample-groups-zero": "option-sample-groups-zero-smc-start",
    "workflow-resume": "checkpoint-workflow-resume-truncated",
}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[] if name == "checkpoint-truncated" else [pytest.mark.slow]) for name in SHELL_CASES])
def test_the_shell_sees_one_line_and_status_2(name, fuzz_inputs, tmp_path):
    """The in-process checks, confirmed once through ``python -m boltzclf`` (the others: -m slow)."""
    fuzz_case = next(c for c in CASES if f"{c.category}-{c.name}" == SHELL_CASES[name])
    out = existing_output(tmp_path / "existing_output")
    argv, needles, watch = fuzz_case.build(fuzz_inputs, tmp_path, out)
    before = snapshot(out, *watch)
    result = _shell(argv, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not (" INFO " in line[:20] and line[:2].isdigit())]
    assert len(lines) == 1 and lines[0].startswith("boltzclf ") and ": error: " in lines[0], result.stderr
    assert all(str(n) in lines[0] for n in needles), (needles, lines[0])
    assert snapshot(out, *watch) == before


# ----------------------------------------------------------------------------------------------------
# Property-based part
# ----------------------------------------------------------------------------------------------------

#: (fast run, slow run) example counts of each hypothesis test.
HYPOTHESIS_EXAMPLES = {
    "experiment_mutations": (30, 400),
    "spec_mutations": (25, 300),
    "random_bytes": (3, 40),  # per input kind (7 kinds)
    "option_values": (25, 300),
    "validation_layer": (300, 5000),
}


def fuzz_settings(name: str, slow: bool):
    return settings(max_examples=HYPOTHESIS_EXAMPLES[name][slow], derandomize=True, database=None, deadline=None,
                    print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                            HealthCheck.filter_too_much, HealthCheck.data_too_large])


_counter = itertools.count()


def fresh(folder: Path, suffix: str) -> Path:
    """A new path under ``folder`` (hypothesis examples share one temporary folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"example_{next(_counter)}{suffix}"


# --- typed mutations of config mappings --------------------------------------------------------------

def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _is_optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _base(tp):
    """``X`` of ``X | None``."""
    if _is_optional(tp):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def wrong_values(tp) -> st.SearchStrategy:
    """Values that can never convert to type ``tp`` (a config field's annotation)."""
    base = _base(tp)
    none = [] if _is_optional(tp) else [st.none()]
    text = st.text(alphabet="abcxyz _-", min_size=1, max_size=8)
    containers = [st.lists(st.integers(0, 9), min_size=1, max_size=3), st.fixed_dictionaries({"k": st.integers()})]
    if base is bool:
        return st.one_of(st.integers(), text, *containers, *none)
    if base is int:
        return st.one_of(text, st.booleans(), st.floats(), st.integers(min_value=2 ** 63),
                         st.integers(max_value=-2 ** 63 - 1), *containers, *none)
    if base is float:
        return st.one_of(text, st.booleans(), st.sampled_from([float("nan"), float("inf"), float("-inf")]),
                         *containers, *none)
    if base is str:
        return st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), *containers, *none)
    if typing.get_origin(base) is Literal:
        return st.one_of(text.filter(lambda v: v not in typing.get_args(base)), st.integers(), *containers, *none)
    if typing.get_origin(base) is tuple:
        return st.one_of(st.integers(), text, st.fixed_dictionaries({"k": st.integers()}), *none)
    if dataclasses.is_dataclass(base):
        return st.one_of(st.integers(), text, st.lists(st.integers(), max_size=2), *none)
    raise TypeError(f"no wrong values for {tp!r}")


def unknown_name(allowed) -> st.SearchStrategy:
    return st.from_regex(r"[a-z][a-z_]{0,10}[a-z]", fullmatch=True).filter(lambda n: n not in allowed)


ANY_SCALAR = st.one_of(st.integers(-5, 5), st.text(alphabet="abc", max_size=4), st.booleans(), st.none())


# --- experiment mutations ------------------------------------------------------------------------------

BASE_EXPERIMENT = yaml.safe_load(EXPERIMENT_TEXT)
BASE_WORKFLOW = yaml.safe_load(WORKFLOW_TEXT)
SECTION_TYPES = {name: _base(tp) for name, tp in _hints(ExperimentConfig).items()}
LEAVES = [(section, key) for section, mapping in BASE_EXPERIMENT.items() for key in mapping]
#: Keys whose values must be positive (<= 0 refused, with the message naming that key).
POSITIVE = [("target", "dim"), ("target", "separation"), ("target", "heavy_weight"), ("process", "beta_min"),
            ("grid", "n_levels"), ("grid", "t_min"), ("model", "hidden"), ("model", "n_layers"),
            ("model", "time_dim"), ("loss", "k"), ("training", "steps"), ("training", "batch_size"),
            ("training", "lr"), ("training", "grad_clip"), ("training", "checkpoint_every"),
            ("training", "log_every"), ("evaluation", "n_samples"), ("evaluation", "n_levels")]
NEGATIVE_REFUSED = POSITIVE + [("training", "ema"), ("training", "dataset_size"), ("loss", "weight")]


@st.composite
def experiment_mutations(draw):
    """``(mapping, dotted key the message must name, what was done)`` for an always-invalid mutation."""
    data = copy.deepcopy(BASE_EXPERIMENT)
    kind = draw(st.sampled_from(["unknown_key", "wrong_type", "non_positive", "section_type"]))
    if kind == "unknown_key":
        section = draw(st.sampled_from([None, *BASE_EXPERIMENT]))
        allowed = ({f.name for f in dataclasses.fields(ExperimentConfig)} if section is None
                   else {f.name for f in dataclasses.fields(SECTION_TYPES[section])})
        name = draw(unknown_name(allowed))
        (data if section is None else data[section])[name] = draw(ANY_SCALAR)
        return data, [repr(name)] + ([section] if section else []), f"unknown_key {name!r} in {section or 'top'}"
    if kind == "section_type":
        section = draw(st.sampled_from(list(BASE_EXPERIMENT)))
        data[section] = draw(wrong_values(SECTION_TYPES[section]))
        return data, [section], f"section_type {section} = {data[section]!r}"
    if kind == "wrong_type":
        section, key = draw(st.sampled_from(LEAVES))
        data[section][key] = draw(wrong_values(_hints(SECTION_TYPES[section])[key]))
    else:
        section, key = draw(st.sampled_from(NEGATIVE_REFUSED))
        is_int = _base(_hints(SECTION_TYPES[section])[key]) is int
        strictly = (section, key) in POSITIVE
        value = draw(st.integers(max_value=0 if strictly else -1) if is_int
                     else st.floats(max_value=0.0 if strictly else -1e-9, allow_nan=False))
        data[section][key] = value
    return data, [f"{section}.{key}"], f"{kind} {section}.{key} = {data[section][key]!r}"


def _check_experiment_mutation(fuzz_inputs, tmp_path_factory, mutation, as_workflow):
    data, needles, what = mutation
    hypothesis.event(f"{'workflow' if as_workflow else 'train'}: {what.split(' ')[0]}")
    folder = tmp_path_factory.getbasetemp() / "experiment_mutations"
    out = existing_output(folder / "existing_output")
    if as_workflow:  # the same mutation inside a workflow's experiment section
        workflow = {**copy.deepcopy(BASE_WORKFLOW), "experiment": data}
        workflow.pop("presets")
        path = write(fresh(folder, ".yaml"), yaml.safe_dump(workflow))
        argv = ["run", path, "--out", out, "--device", "cpu"]
        needles = [n if n.startswith("'") else f"experiment.{n}" for n in needles]
    else:
        path = write(fresh(folder, ".yaml"), yaml.safe_dump(data))
        argv = ["train", path, "--out", out, "--device", "cpu"]
    refuse(argv, [path.name, *needles], [out])


@fuzz_settings("experiment_mutations", slow=False)
@given(mutation=experiment_mutations(), as_workflow=st.booleans())
def test_fuzz_experiment_mutations(fuzz_inputs, tmp_path_factory, mutation, as_workflow):
    _check_experiment_mutation(fuzz_inputs, tmp_path_factory, mutation, as_workflow)


@pytest.mark.slow
@fuzz_settings("experiment_mutations", slow=True)
@given(mutation=experiment_mutations(), as_workflow=st.booleans())
def test_fuzz_experiment_mutations_long(fuzz_inputs, tmp_path_factory, mutation, as_workflow):
    _check_experiment_mutation(fuzz_inputs, tmp_path_factory, mutation, as_workflow)


# --- system spec mutations ---------------------------------------------------------------------------

BASE_SPECS = {"openmmtools": yaml.safe_load(SPEC_TEXT), "pdb": yaml.safe_load(PDB_SPEC_TEXT)}
SOURCE_TYPES = {"openmmtools": OpenMMToolsSource, "pdb": PDBSource}
SPEC_TOP_TYPES = {k: v for k, v in _hints(SystemSpec).items() if k not in ("source", "path")}


@st.composite
def spec_mutations(draw):
    """``(kind, mapping, needles, what)`` for an always-invalid mutation of a valid spec."""
    kind = draw(st.sampled_from(sorted(BASE_SPECS)))
    data = copy.deepcopy(BASE_SPECS[kind])
    source_type = SOURCE_TYPES[kind]
    mutation = draw(st.sampled_from(["drop", "unknown_key", "wrong_type", "bad_number"]))
    if mutation == "drop":
        required = ["name", "kind", "temperature", "source"] + [
            f"source.{f.name}" for f in dataclasses.fields(source_type) if f.default is dataclasses.MISSING]
        key = draw(st.sampled_from(required))
        if key.startswith("source."):
            del data["source"][key.split(".")[1]]
        else:
            del data[key]
        return kind, data, [key.split(".")[-1]], f"drop {key}"
    if mutation == "unknown_key":
        in_source = draw(st.booleans())
        allowed = ({f.name for f in dataclasses.fields(source_type)} if in_source
                   else {f.name for f in dataclasses.fields(SystemSpec)})
        name = draw(unknown_name(allowed))
        (data["source"] if in_source else data)[name] = draw(ANY_SCALAR)
        return kind, data, [repr(name)], f"unknown_key {name!r}"
    if mutation == "wrong_type":
        leaves = [(None, k) for k in SPEC_TOP_TYPES] + [("source", f.name) for f in dataclasses.fields(source_type)]
        where, key = draw(st.sampled_from(leaves))
        if where is None and key == "kind":
            value = draw(st.one_of(st.text(max_size=6).filter(lambda v: v not in BASE_SPECS), st.integers(), st.none()))
        else:
            value = draw(wrong_values((SPEC_TOP_TYPES if where is None else _hints(source_type))[key]))
        (data if where is None else data["source"])[key] = value
        return kind, data, [key if where is None else f"source.{key}"], f"wrong_type {where or ''}.{key} = {value!r}"
    keys = ["temperature"] + (["nonbonded_cutoff"] if kind == "pdb" else [])
    key = draw(st.sampled_from(keys))
    value = draw(st.one_of(st.floats(max_value=0.0), st.sampled_from([float("nan"), float("inf")]),
                           st.integers(max_value=0)))
    (data if key == "temperature" else data["source"])[key] = value
    return kind, data, [key], f"bad_number {key} = {value!r}"


def _check_spec_mutation(fuzz_inputs, tmp_path_factory, mutation):
    kind, data, needles, what = mutation
    hypothesis.event(f"{kind}: {what.split(' ')[0]}")
    folder = tmp_path_factory.getbasetemp() / "spec_mutations"
    out = existing_output(folder / "existing_output")
    if kind == "pdb" and not (folder / "aldp.pdb").exists():
        write(folder / "aldp.pdb", fuzz_inputs.pdb_text)
    path = write(fresh(folder, ".yaml"), yaml.safe_dump(data))
    refuse(validate_energy(path, out), [path.name, *needles], [out])


@fuzz_settings("spec_mutations", slow=False)
@given(mutation=spec_mutations())
def test_fuzz_spec_mutations(fuzz_inputs, tmp_path_factory, mutation):
    _check_spec_mutation(fuzz_inputs, tmp_path_factory, mutation)


@pytest.mark.slow
@fuzz_settings("spec_mutations", slow=True)
@given(mutation=spec_mutations())
def test_fuzz_spec_mutations_long(fuzz_inputs, tmp_path_factory, mutation):
    _check_spec_mutation(fuzz_inputs, tmp_path_factory, mutation)


# --- random bytes as input files ---------------------------------------------------------------------

BYTE_TARGETS = ["spec", "experiment", "workflow", "checkpoint", "pdb", "dcd", "log_weights"]


def _yaml_mapping(data: bytes) -> bool:
    try:
        return isinstance(yaml.safe_load(data.decode("utf-8")), dict)
    except Exception:  # noqa: BLE001 - anything unreadable is what we want
        return False


def _check_random_bytes(fuzz_inputs, tmp_path_factory, target, data):
    if target in ("spec", "experiment", "workflow"):
        assume(not _yaml_mapping(data))  # a random mapping could be a valid config (e.g. '{}')
    if target == "log_weights":
        assume(data != b"")  # an empty .npy is the explicit (xfailed) case trajectory-log-weights-empty-file
    folder = tmp_path_factory.getbasetemp() / "random_bytes"
    out = existing_output(folder / "existing_output")
    watch = [out]
    if target == "spec":
        path = write(fresh(folder, ".yaml"), data)
        argv, needles = validate_energy(path, out), [path.name]
    elif target == "experiment":
        path = write(fresh(folder, ".yaml"), data)
        argv, needles = ["train", path, "--out", out, "--device", "cpu"], [path.name]
    elif target == "workflow":
        path = write(fresh(folder, ".yaml"), data)
        argv, needles = ["run", path, "--out", out, "--device", "cpu"], [path.name]
    elif target == "checkpoint":
        run = fresh(folder, "_run")
        shutil.copytree(fuzz_inputs.run, run)
        write(run / "checkpoint.pt", data)
        argv, needles = ["evaluate", run, "--out", out, "--device", "cpu"], [str(run / "checkpoint.pt")]
        watch.append(run)
    elif target == "pdb":
        molecule = fresh(folder, "_molecule")
        pdb = write(molecule / "aldp.pdb", data)
        argv, needles = validate_energy(write(molecule / "spec.yaml", PDB_SPEC_TEXT), out), [str(pdb)]
    elif target == "dcd":
        path = write(fresh(folder, ".dcd"), data)
        argv, needles = pmf(path, fuzz_inputs.spec, out), [path.name]
    else:
        path = write(fresh(folder, ".npy"), data)
        argv, needles = pmf(fuzz_inputs.traj, fuzz_inputs.spec, out, "--log-weights", path), [path.name]
    refuse(argv, needles, watch)


@pytest.mark.parametrize("target", BYTE_TARGETS)
@fuzz_settings("random_bytes", slow=False)
@given(data=st.binary(max_size=3000))
def test_fuzz_random_bytes_as_input_files(fuzz_inputs, tmp_path_factory, target, data):
    _check_random_bytes(fuzz_inputs, tmp_path_factory, target, data)


@pytest.mark.slow
@pytest.mark.parametrize("target", BYTE_TARGETS)
@fuzz_settings("random_bytes", slow=True)
@given(data=st.binary(max_size=20000))
def test_fuzz_random_bytes_as_input_files_long(fuzz_inputs, tmp_path_factory, target, data):
    _check_random_bytes(fuzz_inputs, tmp_path_factory, target, data)


# --- non-positive and huge option values ---------------------------------------------------------------

#: (option, extra arguments, command builder) -> values <= 0 are refused naming the option; "huge" also
#: refuses integers beyond 64 bits (options whose values go through a validated config).
OPTION_TARGETS = {
    "sample --n": (lambda i, o, v: ["sample", i.run, "--sampler", "ancestral", "--n", v, "--out", o], True),
    "sample --groups": (lambda i, o, v: ["sample", i.run, "--sampler", "smc", "--n", "16", "--groups", v,
                                         "--out", o], True),
    "sample --langevin-steps": (lambda i, o, v: ["sample", i.run, "--sampler", "langevin", "--n", "8",
                                                 "--langevin-steps", v, "--out", o], True),
    "sample --walkers": (lambda i, o, v: ["sample", i.run, "--sampler", "replica", "--n", "8", "--walkers", v,
                                          "--out", o], True),
    "sample --step-size": (lambda i, o, v: ["sample", i.run, "--sampler", "langevin", "--n", "8", "--step-size", v,
                                            "--out", o], False),
    "evaluate --n-samples": (lambda i, o, v: ["evaluate", i.run, "--n-samples", v, "--out", o], True),
    "pmf --bins": (lambda i, o, v: pmf(i.traj, i.spec, o, "--bins", v), False),
    "pmf --bootstrap": (lambda i, o, v: pmf(i.traj, i.spec, o, "--bootstrap", v), False),
    "validate-energy --n": (lambda i, o, v: ["validate-energy", i.spec, "--out", o, "--n", v], False),
    "validate-energy --max-frames": (lambda i, o, v: ["validate-energy", i.spec, "--out", o, "--max-frames", v],
                                     False),
    "simulate --ns": (lambda i, o, v: simulate(i.spec, o, "--ns", v), False),
    "simulate --replicas": (lambda i, o, v: simulate(i.spec, o, "--ns", "0.0001", "--replicas", v), False),
    "simulate --threads": (lambda i, o, v: simulate(i.spec, o, "--ns", "0.0001", "--threads", v), False),
}


@st.composite
def option_values(draw):
    name = draw(st.sampled_from(sorted(OPTION_TARGETS)))
    _, huge_ok = OPTION_TARGETS[name]
    values = [st.integers(max_value=0)]
    if huge_ok:
        values.append(st.integers(min_value=2 ** 63))
    return name, str(draw(st.one_of(*values)))


def _check_option_value(fuzz_inputs, tmp_path_factory, choice):
    name, value = choice
    hypothesis.event(name)
    folder = tmp_path_factory.getbasetemp() / "option_values"
    out = existing_output(folder / "existing_output")
    argv = OPTION_TARGETS[name][0](fuzz_inputs, out, value)
    refuse(argv, [name.split()[1]], [out, fuzz_inputs.run])


@fuzz_settings("option_values", slow=False)
@given(choice=option_values())
def test_fuzz_non_positive_and_huge_option_values(fuzz_inputs, tmp_path_factory, choice):
    _check_option_value(fuzz_inputs, tmp_path_factory, choice)


@pytest.mark.slow
@fuzz_settings("option_values", slow=True)
@given(choice=option_values())
def test_fuzz_non_positive_and_huge_option_values_long(fuzz_inputs, tmp_path_factory, choice):
    _check_option_value(fuzz_inputs, tmp_path_factory, choice)


# --- the validation layer: any value at any key --------------------------------------------------------

ANY_VALUE = st.one_of(st.integers(), st.integers(min_value=2 ** 62), st.integers(max_value=-2 ** 62),
                      st.floats(), st.text(max_size=5), st.booleans(), st.none(),
                      st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                              max_size=2))
BASE_SAMPLE = {"sampler": "smc", "n": 16}
SAMPLE_KEYS = [f.name for f in dataclasses.fields(SampleConfig)]


def _all_finite(obj) -> bool:
    if dataclasses.is_dataclass(obj):
        return all(_all_finite(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, (list, tuple)):
        return all(map(_all_finite, obj))
    if isinstance(obj, dict):
        return all(map(_all_finite, obj.values()))
    return not isinstance(obj, float) or np.isfinite(obj)


@st.composite
def any_value_at_any_key(draw):
    which = draw(st.sampled_from(["experiment", "sample", "spec_source"]))
    value = draw(ANY_VALUE)
    if which == "experiment":
        data = copy.deepcopy(BASE_EXPERIMENT)
        section, key = draw(st.sampled_from(LEAVES + [(s, None) for s in BASE_EXPERIMENT]))
        if key is None:
            data[section] = value
        else:
            data[section][key] = value
        return ExperimentConfig, data, section
    if which == "sample":
        key = draw(st.sampled_from(SAMPLE_KEYS))
        return SampleConfig, {**BASE_SAMPLE, key: value}, None
    kind = draw(st.sampled_from(sorted(SOURCE_TYPES)))
    data = copy.deepcopy(BASE_SPECS[kind]["source"])
    data[draw(st.sampled_from(sorted(data)))] = value
    return SOURCE_TYPES[kind], data, None


def _check_validation_layer(draw_result):
    cls, data, section = draw_result
    try:
        config = from_mapping(cls, data, "fuzz.yaml")
    except ConfigError as exc:
        hypothesis.event(f"{cls.__name__}: refused")
        message = str(exc)
        assert message.startswith("fuzz.yaml: ") and "\n" not in message, message
        if section is not None:  # the message names the section the value was put in
            assert section in message, message
        return
    hypothesis.event(f"{cls.__name__}: accepted")
    assert _all_finite(config), f"accepted a non-finite number: {data}"


@fuzz_settings("validation_layer", slow=False)
@given(draw_result=any_value_at_any_key())
def test_fuzz_any_value_at_any_config_key(draw_result):
    _check_validation_layer(draw_result)


@pytest.mark.slow
@fuzz_settings("validation_layer", slow=True)
@given(draw_result=any_value_at_any_key())
def test_fuzz_any_value_at_any_config_key_long(draw_result):
    _check_validation_layer(draw_result)
