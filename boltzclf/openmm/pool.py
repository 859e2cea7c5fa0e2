"""OpenMM energy/force evaluation of many configurations: one Context, or a pool of worker processes.

Per-call overhead, not physics, dominates small systems (see FIELD.md §3), and more threads per
Context do not help, so the pool parallelises across single-threaded Contexts in separate processes.
This module deals in OpenMM units (kJ/mol, kJ/mol/nm) and numpy float64; reduced units and torch
live in :mod:`boltzclf.openmm.bridge`. It imports no torch so that worker processes start fast.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
from multiprocessing.connection import Connection

import numpy as np
import openmm
import openmm.unit as unit

from boltzclf.core.errors import BoltzclfError

log = logging.getLogger(__name__)

_KJ = unit.kilojoule_per_mole
_KJ_NM = unit.kilojoule_per_mole / unit.nanometer


def check_platform(platform: str) -> openmm.Platform:
    """The OpenMM platform named ``platform``; BoltzclfError listing the available ones if absent."""
    try:
        return openmm.Platform.getPlatformByName(platform)
    except Exception:
        available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        raise BoltzclfError(f"OpenMM platform {platform!r} is not available; available: {available}") from None


def make_context(system: openmm.System, platform: str = "CPU", threads: int = 1,
                 integrator: openmm.Integrator | None = None) -> openmm.Context:
    """An OpenMM Context on ``platform`` (CPU contexts get ``threads`` threads)."""
    plat = check_platform(platform)
    properties = {"Threads": str(threads)} if platform == "CPU" else {}
    return openmm.Context(system, integrator or openmm.VerletIntegrator(0.001), plat, properties)


class ContextEvaluator:
    """Energies and forces of configurations, evaluated one by one on a single Context.

    Virtual sites are placed from their parent atoms before each evaluation, so the energy does not
    depend on the input's coordinates of a site; OpenMM distributes a site's force onto its parents
    and also reports it on the site, where it is set to zero here, so that forces are −∇ of the
    energy of the input.
    """

    def __init__(self, system: openmm.System, platform: str = "CPU", threads: int = 1) -> None:
        self.context = make_context(system, platform, threads)
        self._virtual_sites = np.array([system.isVirtualSite(i) for i in range(system.getNumParticles())])

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Potential energies ``(B,)`` [kJ/mol] and forces ``(B, n, 3)`` [kJ/mol/nm] of ``x`` [nm]."""
        energy = np.empty(x.shape[0], dtype=np.float64)
        force = np.empty(x.shape, dtype=np.float64)
        for i, positions in enumerate(x):
            self.context.setPositions(positions)
            if self._virtual_sites.any():
                self.context.computeVirtualSites()
            state = self.context.getState(getEnergy=True, getForces=True)
            energy[i] = state.getPotentialEnergy().value_in_unit(_KJ)
            force[i] = state.getForces(asNumpy=True).value_in_unit(_KJ_NM)
        force[:, self._virtual_sites] = 0.0
        return energy, force

    def close(self) -> None:
        """Release the Context."""
        del self.context


def _worker_main(conn: Connection, system_xml: str, platform: str) -> None:
    """Worker process loop: receive position arrays, send back (energy, force) or an error string."""
    try:
        evaluator = ContextEvaluator(openmm.XmlSerializer.deserialize(system_xml), platform, threads=1)
    except Exception as exc:  # e.g. an unknown platform: tell the parent why, then stop
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    conn.send(("ready", None))
    while True:
        message = conn.recv()
        if message is None:
            break
        try:
            conn.send(("ok", evaluator.evaluate(message)))
        except Exception as exc:  # report to the parent instead of dying silently
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    conn.close()


class ContextPool:
    """``n_workers`` processes, each with one single-threaded Context of the same system.

    A batch is split into contiguous chunks, one per worker, evaluated concurrently.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, system: openmm.System, n_workers: int, platform: str = "CPU") -> None:
        if n_workers < 1:
            raise BoltzclfError(f"workers: need at least 1, got {n_workers}")
        xml = openmm.XmlSerializer.serialize(system)
        ctx = mp.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs = []
        for _ in range(n_workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, xml, platform), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        try:
            self._receive_all(self._conns)
        except BoltzclfError:
            self.close()
            raise
        log.debug("started %d OpenMM workers on %s", n_workers, platform)

    @property
    def n_workers(self) -> int:
        return len(self._conns)

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`ContextEvaluator.evaluate`, split over the workers."""
        chunks = [c for c in np.array_split(x, self.n_workers) if len(c)]
        sent = []
        for conn, chunk in zip(self._conns, chunks):
            try:
                conn.send(chunk)
            except OSError:  # the worker is gone (killed, crashed): its end of the pipe is closed
                break
            sent.append(conn)
        results = self._receive_all(sent)  # drain the replies of the chunks that were sent
        if len(sent) < len(chunks):
            raise BoltzclfError(f"OpenMM worker failed: worker {len(sent)} of {self.n_workers} is no "
                                "longer running; close this bridge and make a new one")
        return (np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]))

    @staticmethod
    def _receive_all(conns: list[Connection]) -> list:
        """Every worker's reply, read in full before raising the first error, so no stale reply is
        left in a pipe for the next batch."""
        replies = []
        for conn in conns:
            try:
                replies.append(conn.recv())
            except EOFError:
                replies.append(("error", "the worker process died"))
        errors = [payload for status, payload in replies if status == "error"]
        if errors:
            raise BoltzclfError(f"OpenMM worker failed: {errors[0]}")
        return [payload for _, payload in replies]

    def close(self) -> None:
        """Stop the workers."""
        for conn in self._conns:
            try:
                conn.send(None)
                conn.close()
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> "ContextPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
