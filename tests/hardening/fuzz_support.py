"""Helpers of the fuzzed-input suite: run the CLI in-process like a shell would see it, check that an
input was refused cleanly, and fingerprint output directories.

A refusal is clean when (ARCHITECTURE.md, "Errors"):

* the exit status is 2 and no exception escaped ``main`` (so no traceback was printed);
* stderr (Python and C level) holds ONE message: the line ``boltzclf COMMAND: error: ...``; argparse's
  usage block before it and INFO/DEBUG log lines are not counted, while WARNING/ERROR log lines and
  Python warnings are extra messages (mdtraj's C DCD reader chatters on stdout, which is not checked);
* that line names the culprit (every given needle occurs in it);
* every file under the watched paths (pre-existing outputs, run directories read or resumed) has the
  same SHA-256 afterwards, and no file appeared or vanished there.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import re
import sys
import tempfile
import textwrap
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from boltzclf.cli.main import main

EXIT_USER_ERROR = 2

ERROR_LINE = re.compile(r"^boltzclf(?: [\w-]+)?: error: ")
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
#: Python warning categories a plain ``python -m boltzclf`` hides (outside ``__main__``).
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@dataclass
class Outcome:
    """What one CLI invocation did."""

    argv: list[str]
    code: int | None = None
    stderr: str = ""
    stdout: str = ""
    exception: str | None = None  # a formatted traceback when something escaped main()
    warnings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _captured_fd2():
    """Redirect file descriptor 2 (C-level stderr) into a temporary file; yields a reader."""
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        chunks: list[str] = []
        try:
            yield chunks
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            chunks.append(tmp.read().decode("utf-8", errors="replace"))


def invoke(argv: list[str]) -> Outcome:
    """Run ``boltzclf ARGV`` in this process, capturing stdout, stderr (Python and C level), log records
    as ``main`` would print them, and Python warnings."""
    outcome = Outcome([str(a) for a in argv])
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []  # so main()'s logging.basicConfig attaches a handler to the captured stderr
    err, out = io.StringIO(), io.StringIO()
    try:
        with _captured_fd2() as c_level, warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            warnings.simplefilter("always")
            try:
                outcome.code = main(outcome.argv)
            except SystemExit as exc:  # argparse
                outcome.code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - anything escaping main() is a traceback in a shell
                outcome.exception = traceback.format_exc()
    finally:
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers, root.level = saved_handlers, saved_level
    outcome.stderr = err.getvalue() + "".join(c_level)
    outcome.stdout = out.getvalue()
    outcome.warnings = [f"{w.category.__name__}: {w.message}" for w in caught
                        if not issubclass(w.category, HIDDEN_WARNINGS)]
    return outcome


def messages(outcome: Outcome) -> list[str]:
    """The stderr lines a user reads as messages (see the module docstring), plus Python warnings."""
    lines, in_usage = [], False
    for line in outcome.stderr.splitlines():
        if line.startswith("usage: "):
            in_usage = True
            continue
        if in_usage and (line.startswith(" ") or not line.strip()):
            continue
        in_usage = False
        if not line.strip():
            continue
        match = LOG_LINE.match(line)
        if match and match.group(1) in ("DEBUG", "INFO"):
            continue
        lines.append(line)
    return lines + outcome.warnings


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(*paths: Path) -> dict[str, str]:
    """``{path: sha256}`` of every file under ``paths`` (files or directories), ``"<dir>"`` for
    directories, ``"<missing>"`` for a watched path that does not exist."""
    state: dict[str, str] = {}
    for root in map(Path, paths):
        if not root.exists():
            state[str(root)] = "<missing>"
        elif root.is_file():
            state[str(root)] = sha256(root)
        else:
            state[str(root)] = "<dir>"
            for path in sorted(root.rglob("*")):
                state[str(path)] = sha256(path) if path.is_file() else "<dir>"
    return state


def assert_refused(outcome: Outcome, needles, watch: list, before: dict[str, str]) -> str:
    """Assert a clean refusal (module docstring) naming every needle, with the files under ``watch``
    as in ``before`` (a :func:`snapshot`); returns the message."""
    assert outcome.exception is None, f"{outcome.argv}: exception escaped main():\n{outcome.exception}"
    assert "Traceback (most recent call last)" not in outcome.stderr, outcome.stderr
    assert outcome.code == EXIT_USER_ERROR, (f"{outcome.argv}: exit status {outcome.code}, expected 2\n"
                                             f"stderr: {outcome.stderr}")
    found = messages(outcome)
    assert len(found) == 1, f"{outcome.argv}: expected one message on stderr, got {len(found)}: {found}"
    message = found[0]
    assert ERROR_LINE.match(message), f"not a boltzclf error line: {message!r}"
    for needle in ([needles] if isinstance(needles, str) else needles):
        assert str(needle) in message, f"the message does not name {needle!r}: {message!r}"
    after = snapshot(*watch)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"{outcome.argv}: existing output changed: {changed[:5]}"
    return message


def refuse(argv: list, needles, watch: list) -> str:
    """Snapshot ``watch``, run ``argv`` and :func:`assert_refused`; returns the message."""
    before = snapshot(*watch)
    return assert_refused(invoke(argv), needles, watch, before)


def existing_output(folder: Path) -> Path:
    """A pre-existing output directory (files and a sub-folder, no ``config.json``), so anything a
    command writes there before refusing shows up as a change."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text('{"keep": true}\n')
    (folder / "notes.txt").write_text("hand-written notes; must survive\n")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "data.bin").write_bytes(bytes(range(256)) * 4)
    return folder


# ----------------------------------------------------------------------------------------------------
# Valid inputs (built lazily, once per session, by the ``fuzz_inputs`` fixture of conftest.py)
# ----------------------------------------------------------------------------------------------------

#: A valid system spec of alanine dipeptide in vacuum (openmmtools test system, 22 atoms).
SPEC_TEXT = textwrap.dedent("""\
    name: aldp
    kind: openmmtools
    temperature: 300.0
    source: {testsystem: AlanineDipeptideVacuum, constraints: none}
    """)

#: A valid PDB spec; ``aldp.pdb`` (written from the openmmtools system) lies next to it.
PDB_SPEC_TEXT = textwrap.dedent("""\
    name: aldp_pdb
    kind: pdb
    temperature: 300.0
    source:
      pdb: aldp.pdb
      forcefield: [amber14-all.xml]
      constraints: none
      nonbonded_cutoff: null
    """)

#: A valid experiment that trains in about a second (every section given, mostly explicit keys).
EXPERIMENT_TEXT = textwrap.dedent("""\
    target: {name: two_modes, dim: 2, separation: 5.0, seed: 0, heavy_weight: 0.6}
    process: {kind: vp, beta_min: 0.1, beta_max: 20.0}
    grid: {kind: log_snr, n_levels: 8, t_min: 1.0e-3, t_max: 0.9999}
    model: {kind: mlp, hidden: 16, n_layers: 1, time_dim: 8, embedding: positional}
    loss: {kind: diffclf, k: 2, weight: 1.0, pairs: uniform, shared_noise: false, classify: all}
    training: {steps: 4, batch_size: 32, lr: 1.0e-3, lr_schedule: constant, grad_clip: 1.0, ema: 0.9,
               dataset_size: 128, checkpoint_every: 2, log_every: 2, seed: 0}
    evaluation: {n_samples: 64, n_levels: 3, seed: 1234}
    """)

#: A valid two-method workflow of the same size.
WORKFLOW_TEXT = textwrap.dedent("""\
    workflow: compare_losses
    description: fuzz base
    experiment:
      target: {name: two_modes, dim: 2}
      grid: {kind: log_snr, n_levels: 8, t_min: 1.0e-3}
      model: {hidden: 16, n_layers: 1, time_dim: 8}
      training: {steps: 4, batch_size: 32, checkpoint_every: 2, log_every: 2, dataset_size: 128}
      evaluation: {n_samples: 64, n_levels: 3}
    methods:
      dsm: {kind: dsm, k: 2}
      diffclf: {kind: diffclf, k: 2}
    presets:
      quick: {experiment: {training: {steps: 2}}}
    """)


class FuzzInputs:
    """Valid inputs under ``root``, each made on first access."""

    def __init__(self, root: Path):
        self.root = root

    def _ok(self, argv: list) -> None:
        outcome = invoke(argv)
        assert outcome.exception is None and outcome.code == 0, (argv, outcome.exception, outcome.stderr)

    @functools.cached_property
    def spec(self) -> Path:
        path = self.root / "specs" / "aldp.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SPEC_TEXT)
        return path

    @functools.cached_property
    def system(self):
        from boltzclf.openmm import load_system

        return load_system(self.spec)

    @functools.cached_property
    def pdb_text(self) -> str:
        import io

        from openmm import app, unit

        buffer = io.StringIO()
        app.PDBFile.writeFile(self.system.topology, self.system.positions * unit.nanometer, buffer)
        return buffer.getvalue()

    @functools.cached_property
    def pdb_spec(self) -> Path:
        folder = self.root / "molecule"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "aldp.pdb").write_text(self.pdb_text)
        (folder / "spec.yaml").write_text(PDB_SPEC_TEXT)
        return folder / "spec.yaml"

    @functools.cached_property
    def frames(self):
        """``(5, 22, 3)`` float32 frames [nm]: the structure plus 1 pm noise."""
        import numpy as np

        rng = np.random.default_rng(0)
        return (self.system.positions[None] + 0.001 * rng.standard_normal((5, 22, 3))).astype(np.float32)

    def write_dcd(self, path: Path, frames=None, atoms=None) -> Path:
        import mdtraj

        topology = self.system.mdtraj_topology
        traj = mdtraj.Trajectory(self.frames if frames is None else frames, topology)
        if atoms is not None:
            traj = traj.atom_slice(atoms)
        path.parent.mkdir(parents=True, exist_ok=True)
        traj.save_dcd(str(path))
        return path

    @functools.cached_property
    def traj(self) -> Path:
        return self.write_dcd(self.root / "traj" / "good.dcd")

    @functools.cached_property
    def experiment(self) -> Path:
        path = self.root / "experiment.yaml"
        path.write_text(EXPERIMENT_TEXT)
        return path

    @functools.cached_property
    def run(self) -> Path:
        """A finished 4-step ``boltzclf train`` run of :data:`EXPERIMENT_TEXT`."""
        out = self.root / "run"
        self._ok(["train", self.experiment, "--out", out, "--device", "cpu"])
        return out

    #: ``boltzclf simulate`` options of :attr:`md_run` (a resume must repeat them exactly).
    MD_OPTIONS = ("--ns", "0.0005", "--no-progress", "--no-minimize", "--equilibration-ps", "0",
                  "--checkpoint-frames", "2", "--threads", "1")

    @functools.cached_property
    def md_run(self) -> Path:
        """A finished 5-frame ``boltzclf simulate`` run in 3 chunks (MD checkpoint, chunks/, outputs)."""
        out = self.root / "md_run"
        self._ok(["simulate", self.spec, "--out", out, *self.MD_OPTIONS])
        return out

    @functools.cached_property
    def workflow(self) -> Path:
        path = self.root / "workflow.yaml"
        path.write_text(WORKFLOW_TEXT)
        return path

    @functools.cached_property
    def workflow_run(self) -> Path:
        """A finished ``boltzclf run`` of :data:`WORKFLOW_TEXT` (no preset)."""
        out = self.root / "workflow_run"
        self._ok(["run", self.workflow, "--out", out, "--device", "cpu"])
        return out
