"""Helpers of the kill-anywhere suite: run ``python -m boltzclf`` in a subprocess, SIGKILL it at a chosen
point, run it again to completion and compare the output directory with an uninterrupted run's.

Three kinds of kill point (:class:`AfterTime`, :class:`OnFile`, :class:`AtWrite`):

* after a delay: the uninterrupted run's start-up time (until its ``config.json`` appeared: imports
  and input checks) plus a fraction of its working time (until its ``results.json`` appeared);
* as soon as a file appears, seen from outside by polling (optionally after a further delay);
* inside the child, at the n-th atomic write (``os.replace``) of a file matching a pattern: right
  after the rename (the file exists, the next write has not started: e.g. a chunk written, its
  checkpoint not) or right before it (the temporary file complete, the rename not done). The child
  runs ``python -m boltzclf`` through :data:`LAUNCHER`, which only wraps ``os.replace``.

:func:`compare_run_dirs` compares two run directories bitwise, except wall-clock fields and provenance
stamps (see :data:`UNCOMPARED`), recorded file checksums (``results.json``'s are checked against the
files next to the record instead, ``metadata.json``'s input checksums only for naming the same files:
``.npz`` archives, DCD and PDB files carry their write time, and a ``torch.save`` archive the name of
the temporary file it was written to) and the temporary files a killed atomic write leaves behind (see
:func:`stray_temporaries`).
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]

#: Keys of JSON records and checkpoints (at any depth) that are not results: wall-clock measurements and
#: the provenance stamps of when and from which commit a directory was started.
UNCOMPARED = re.compile(r"wall|ns_per_day|memory|peak_rss|per_s$|^created$|^git_hash$")
#: Temporary files of :mod:`boltzclf.core.atomic` (``.<stem>.<random>.tmp<suffix>``).
TEMPORARY = re.compile(r"^\..*\.tmp(\.[^.]*)?$")

#: Runs ``python -m boltzclf ARGS`` with ``os.replace`` wrapped so that the process SIGKILLs itself at the
#: ``nth`` rename onto a path matching ``pattern``, ``before`` or ``after`` it. argv: pattern nth phase ARGS.
LAUNCHER = r"""
import fnmatch, os, runpy, signal, sys
pattern, nth, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3]
del sys.argv[1:4]
sys.argv[0] = "boltzclf"
replace, seen = os.replace, [0]

def killing_replace(src, dst, *args, **kwargs):
    hit = fnmatch.fnmatch(os.fspath(dst), pattern)
    seen[0] += hit
    if hit and seen[0] == nth and phase == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst, *args, **kwargs)
    if hit and seen[0] == nth and phase == "after":
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = killing_replace
runpy.run_module("boltzclf", run_name="__main__", alter_sys=True)
"""


def environment() -> dict[str, str]:
    """The child's environment: this checkout first on the path, two threads unless set otherwise."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


@dataclass(frozen=True)
class Reference:
    """An uninterrupted run: its directory, its start-up time (until ``config.json`` appeared) and its
    working time after that (until ``results.json`` appeared) [s]."""

    out: Path
    startup_s: float
    span_s: float


@dataclass(frozen=True)
class AfterTime:
    """SIGKILL after the reference's start-up time plus ``fraction`` of its span."""

    fraction: float

    def __str__(self) -> str:
        return f"after {self.fraction:.3f} of the run"


@dataclass(frozen=True)
class OnFile:
    """SIGKILL ``delay_s`` after ``name`` (relative to ``--out``) is seen to exist (polled every 10 ms)."""

    name: str
    delay_s: float = 0.0

    def __str__(self) -> str:
        return f"when {self.name} appears" + (f" + {self.delay_s:.2f} s" if self.delay_s else "")


@dataclass(frozen=True)
class AtWrite:
    """The child SIGKILLs itself at the ``nth`` atomic write of a file matching ``pattern`` (relative to
    ``--out``, fnmatch syntax), ``before`` the rename (the temporary file left behind) or after it."""

    pattern: str
    nth: int = 1
    before: bool = False

    def __str__(self) -> str:
        return f"{'before' if self.before else 'after'} write #{self.nth} of {self.pattern}"


Kill = AfterTime | OnFile | AtWrite


def _run(argv: list, cwd: Path, args: list, watch: Callable[[subprocess.Popen], None], timeout: float) -> bool:
    """Run ``argv`` while ``watch(process)`` polls or kills it; True if it was SIGKILLed, False if it
    ended by itself (it must then have succeeded). Its stderr goes to a temporary file (a pipe left
    unread could fill up and block it) and is shown if it fails."""
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile(mode="w+") as stderr:
        proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=environment(), stdout=subprocess.DEVNULL,
                                stderr=stderr, text=True)
        try:
            watch(proc)
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"boltzclf {' '.join(map(str, args))}: still running after {timeout} s") from None
        if proc.returncode == -signal.SIGKILL:
            return True
        stderr.seek(0)
        assert proc.returncode == 0, \
            f"boltzclf {' '.join(map(str, args))} failed ({proc.returncode}):\n{stderr.read()[-4000:]}"
        return False


def run_to_completion(args: list, out: Path, cwd: Path = REPO, timeout: float = 900.0) -> Reference:
    """Run ``python -m boltzclf ARGS`` (writing into ``out``) to the end; it must succeed. The span
    ends when ``results.json`` appears (the interpreter's exit after it is no work)."""
    start = time.monotonic()
    seen: dict[str, float] = {}

    def watch(proc: subprocess.Popen) -> None:
        while proc.poll() is None and time.monotonic() < start + timeout:
            _note(seen, out, start)
            time.sleep(0.01)

    assert not _run([sys.executable, "-m", "boltzclf", *args], cwd, args, watch, timeout), "killed from outside"
    _note(seen, out, start)
    startup = seen.get("config.json", 0.0)
    return Reference(out, startup, seen["results.json"] - startup)


def _note(seen: dict[str, float], out: Path, start: float) -> None:
    """Record when ``config.json`` and ``results.json`` first exist in ``out`` [s after ``start``]."""
    for name in ("config.json", "results.json"):
        if name not in seen and (out / name).exists():
            seen[name] = time.monotonic() - start


@dataclass(frozen=True)
class Attempt:
    """One run of a kill point: whether it was SIGKILLed, and how long after its start its
    ``results.json`` appeared [s] (None if it did not, or was there from the start)."""

    killed: bool
    results_after_s: float | None


def kill_once(args: list, out: Path, kill: Kill, reference: Reference, cwd: Path = REPO,
              timeout: float = 900.0) -> Attempt:
    """Run ``python -m boltzclf ARGS`` and SIGKILL it at ``kill`` (a time-based kill ``startup_s +
    fraction · span_s`` of ``reference`` after the start). A crash is an error."""
    if isinstance(kill, AtWrite):
        pattern = str(out / kill.pattern)
        argv = [sys.executable, "-c", LAUNCHER, pattern, kill.nth, "before" if kill.before else "after", *args]
    else:
        argv = [sys.executable, "-m", "boltzclf", *args]
    start = time.monotonic()
    seen = {"results.json": None} if (out / "results.json").exists() else {}

    def watch(proc: subprocess.Popen) -> None:
        kill_at = start + reference.startup_s + kill.fraction * reference.span_s if isinstance(kill, AfterTime) \
            else start + timeout
        while proc.poll() is None and time.monotonic() < kill_at:
            _note(seen, out, start)
            if isinstance(kill, OnFile) and (out / kill.name).exists():
                time.sleep(kill.delay_s)
                break
            time.sleep(0.01)
        if not isinstance(kill, AtWrite):
            proc.send_signal(signal.SIGKILL)  # nothing if it has ended

    killed = _run(argv, cwd, args, watch, timeout)
    _note(seen, out, start)
    return Attempt(killed, seen.get("results.json"))


def kill_and_resume(args: list, out: Path, kills: list[Kill], reference: Reference, cwd: Path = REPO,
                    tries: int = 3, after_kill: Callable[[], None] | None = None) -> list[str]:
    """Kill the run of ``args`` in ``out`` at each of ``kills`` in turn (each kill hits the run resumed
    after the previous one; ``after_kill()`` is called after each), then run it to completion; returns
    a description of each kill.

    A time-based kill that misses (the run had written its ``results.json``, after which a re-run redoes
    nothing) is retried from the same state, up to ``tries`` times, with the span of the missed run
    (a machine shared with other work runs at varying speed); any other miss is an error of the kill
    point's definition.
    """
    done = []
    for kill in kills:
        for _ in range(tries):
            snapshot = _copy_aside(out)
            attempt = kill_once(args, out, kill, reference, cwd)
            if attempt.killed and attempt.results_after_s is None:
                break
            assert isinstance(kill, AfterTime), f"{kill}: the run finished without reaching this kill point"
            _restore(out, snapshot)
            span = attempt.results_after_s - reference.startup_s
            reference = Reference(reference.out, reference.startup_s, max(span, 0.1 * attempt.results_after_s))
        else:
            raise AssertionError(f"{kill}: the run always finished before the kill")
        if snapshot is not None:
            shutil.rmtree(snapshot)
        if after_kill is not None:
            after_kill()
        done.append(str(kill))
    run_to_completion(args, out, cwd)
    return done


def _copy_aside(out: Path) -> Path | None:
    """A copy of ``out`` as it is now (None if it does not exist), to retry a missed kill from."""
    if not out.exists():
        return None
    copy = out.with_name(out.name + ".before-kill")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(out, copy)
    return copy


def _restore(out: Path, snapshot: Path | None) -> None:
    shutil.rmtree(out)
    if snapshot is not None:
        shutil.move(snapshot, out)


# ----------------------------------------------------------------------------------------------------
# Comparison of run directories
# ----------------------------------------------------------------------------------------------------

def stray_temporaries(out: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes under ``out``."""
    return sorted(p for p in out.rglob("*") if p.is_file() and TEMPORARY.match(p.name))


def _files(out: Path, skip: tuple[str, ...]) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*")
            if p.is_file() and not TEMPORARY.match(p.name) and not any(fnmatch.fnmatch(str(p.relative_to(out)), s)
                                                                         for s in skip)}


def _normalise(value, roots: tuple[str, ...]):
    """``value`` with the run directories' own paths replaced by ``<OUT>`` (configs and provenance name
    warm starts inside the run)."""
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, "<OUT>")
        return value
    if isinstance(value, dict):
        return {_normalise(k, roots): _normalise(v, roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v, roots) for v in value]
    return value


def _compare_json(a, b, where: str, dir_a: Path, dir_b: Path) -> None:
    """Compare JSON values ``a`` (of a file in ``dir_a``) and ``b`` (in ``dir_b``) at ``where``."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a.keys() ^ b.keys())} differ"
        for key in a:
            if UNCOMPARED.search(str(key)):
                continue
            if key == "checksums_sha256":  # of files that carry their write time: checked against the files
                for folder, sums in ((dir_a, a[key]), (dir_b, b[key])):  # (a copied record's files lie elsewhere)
                    for name, digest in sums.items():
                        assert not (folder / name).exists() or _sha256(folder / name) == digest, \
                            f"{folder / name}: recorded checksum differs"
                assert a[key].keys() == b[key].keys(), f"{where}.{key}: different files"
                continue
            if where.endswith("metadata.json") and key == "inputs":  # checksums of inputs such as a warm
                assert a[key].keys() == b[key].keys(), f"{where}.{key}: different files"  # start's checkpoint
                continue
            _compare_json(a[key], b[key], f"{where}.{key}", dir_a, dir_b)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: lengths {len(a)} and {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _compare_json(x, y, f"{where}[{i}]", dir_a, dir_b)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compare_tensors(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b) or bool((a.isnan() & b.isnan() | (a == b)).all()), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for key in a:
            if not UNCOMPARED.search(str(key)):
                _compare_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _compare_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _read_dcd(path: Path) -> tuple:
    """Coordinates and unit cells of a DCD, as stored (float32 Å)."""
    from mdtraj.formats import DCDTrajectoryFile

    with DCDTrajectoryFile(str(path)) as handle:
        return handle.read()


def compare_run_dirs(a: Path, b: Path, skip: tuple[str, ...] = ()) -> int:
    """Assert that run directories ``a`` and ``b`` hold the same files with the same content (see the
    module docstring; ``skip``: fnmatch patterns of relative paths left out); returns the number of
    files compared."""
    roots = (str(a), str(b))
    files_a, files_b = _files(a, skip), _files(b, skip)
    assert files_a == files_b, f"files only in one run: {sorted(files_a ^ files_b)}"
    for name in sorted(files_a):
        pa, pb = a / name, b / name
        if name.endswith(".json"):
            ja, jb = (_normalise(json.loads(p.read_text()), roots) for p in (pa, pb))
            _compare_json(ja, jb, name, pa.parent, pb.parent)
        elif name.endswith(".jsonl"):
            la, lb = (pa.read_text().splitlines(), pb.read_text().splitlines())
            assert len(la) == len(lb), f"{name}: {len(la)} and {len(lb)} lines"
            for i, (x, y) in enumerate(zip(la, lb)):
                _compare_json(json.loads(x), json.loads(y), f"{name}:{i + 1}", pa.parent, pb.parent)
        elif name.endswith(".npz"):
            with np.load(pa) as za, np.load(pb) as zb:
                assert sorted(za.files) == sorted(zb.files), f"{name}: arrays differ"
                for key in za.files:
                    assert za[key].dtype == zb[key].dtype and np.array_equal(za[key], zb[key], equal_nan=True), \
                        f"{name}[{key}] differs"
        elif name.endswith(".pt"):
            ta, tb = (_normalise(torch.load(p, weights_only=True), roots) for p in (pa, pb))
            _compare_tensors(ta, tb, name)
        elif name.endswith(".pdb"):
            lines = [[ln for ln in p.read_text().splitlines() if not ln.startswith("REMARK")] for p in (pa, pb)]
            assert lines[0] == lines[1], f"{name} differs"
        elif name.endswith(".md"):  # the last column of report tables is a wall time
            lines = [[re.sub(r"\| [^|]* \|$", "|", ln) for ln in _normalise(p.read_text(), roots).splitlines()]
                     for p in (pa, pb)]
            assert lines[0] == lines[1], f"{name} differs"
        elif name.endswith(".dcd"):  # the header holds the write time
            for x, y in zip(*(_read_dcd(p) for p in (pa, pb))):
                assert (x is None and y is None) or np.array_equal(x, y), f"{name} differs"
        elif name.endswith(".png"):
            continue  # drawn from the compared numbers
        else:
            assert pa.read_bytes() == pb.read_bytes(), f"{name} differs"
    return len(files_a)
