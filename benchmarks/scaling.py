"""Shared parts of the scale-out benchmarks (imported by the scripts next to it): how a configuration
of processes × threads is launched, which configurations are timed, and the report of their ratios."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launcher(processes: int) -> list[str]:
    """The command prefix that runs ``processes`` copies (``torchrun`` for more than one)."""
    if processes == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]


def environment(threads: int) -> dict[str, str]:
    """The environment of a timed child: ``threads`` OpenMP threads, the repository on the path."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}


def configurations(device: str) -> dict[str, tuple[int, int]]:
    """name -> (processes, threads per process): the 1-process baseline, 2 processes, and on CPU the
    other way to use two cores (1 process × 2 threads)."""
    runs = {"1x1": (1, 1), "2x1": (2, 1)}
    if device == "cpu":
        runs["1x2"] = (1, 2)
    return runs


def report(name: str, settings: dict, runs: dict[str, dict], rate: str, out: Path | None) -> dict:
    """Print (and write to ``out``) the runs and their ratios to the ``1x1`` baseline of key ``rate``."""
    base = runs["1x1"][rate]
    result = {"benchmark": name, **settings, "machine": platform.platform(), "cpu_count": os.cpu_count(),
              "runs": runs, "speedup_2_processes": runs["2x1"][rate] / base,
              "scaling_efficiency_2_processes": runs["2x1"][rate] / (2 * base)}
    if "1x2" in runs:
        result["speedup_1_process_2_threads"] = runs["1x2"][rate] / base
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        sys.path.insert(0, str(REPO))
        from boltzclf.core.atomic import write_text

        write_text(out, text + "\n")
    return result
