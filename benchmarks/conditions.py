"""Equal measurement conditions for the benchmarks (imported by the scripts next to it).

On the 2-core VM the benchmarks run on, an OpenMM CPU Context is several times slower while the
other core is idle than while it is busy: the CPU platform hands each call to a worker thread, and
waking it from an idle core is slow there (ALDP MD: ~90 against ~380 ns/day). A baseline timed on
an idle machine would therefore inflate every ratio against it; scripts time such baselines both
ways and keep the faster.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time


@contextlib.contextmanager
def busy_neighbour(active: bool, count: int = 1):
    """``count`` busy-looping subprocesses for the duration (when ``active``)."""
    if not active:
        yield
        return
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
