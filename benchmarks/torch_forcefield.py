"""Torch force field throughput: energy+force evaluations/s at batch 1, 64, 1024, 8192 vs OpenMM.

    python benchmarks/torch_forcefield.py [--systems alanine_dipeptide_implicit] [--threads 2]
        [--dtypes float64,float32] [--modes eager,compiled] [--devices cpu,cuda] [--out results.json]

Baseline: a Python loop over one single-threaded OpenMM CPU Context (``setPositions`` +
``getState(energy, forces)``), the single-Context bridge measurement of FIELD.md §3, timed with the
other cores idle and beside busy-looping processes, the faster kept. Torch: one call
of ``TorchForceField.energy_and_force`` per batch (forces by autograd), on CPU with ``--threads``
torch threads and on CUDA when available; eager and under ``torch.compile`` (``--modes``;
compilation happens in the untimed warm-up, its duration is reported). Each rate is the best of ``--repeats``
timings of at least ``--min-seconds``, both per wall-clock second and per process CPU-second (the
latter is robust on a shared machine; the load average is recorded because an oversubscribed machine
distorts wall-clock and especially multi-threaded CPU timings). Prints one JSON document (and writes it to ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from boltzclf.core.provenance import package_versions
from boltzclf.forcefield import TorchForceField
from boltzclf.openmm import load_system
from boltzclf.openmm.pool import ContextEvaluator
from conditions import busy_neighbour

SYSTEMS = Path(__file__).resolve().parents[1] / "systems"
BATCHES = (1, 64, 1024, 8192)


def rate(evaluate, batch: int, repeats: int, min_seconds: float) -> dict[str, float]:
    """Evaluations per wall-clock second and per process CPU-second of ``evaluate()`` on ``batch``
    configurations (best of ``repeats`` timings each).

    CPU time counts every thread of the process, so on a shared, oversubscribed machine the
    per-CPU-second rate still measures the work done, where wall-clock rates mostly measure the load.
    """
    best_wall, best_cpu = 0.0, 0.0
    for _ in range(repeats):
        calls, start, cpu_start = 0, time.perf_counter(), time.process_time()
        while True:
            evaluate()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        cpu = max(time.process_time() - cpu_start, 1e-9)
        best_wall = max(best_wall, calls * batch / elapsed)
        best_cpu = max(best_cpu, calls * batch / cpu)
    return {"wall": best_wall, "cpu": best_cpu}


def openmm_rate(system, x: np.ndarray, repeats: int, min_seconds: float) -> dict[str, float]:
    """The single-threaded Context loop timed with the other cores idle and busy; the faster counts
    (an OpenMM call from a machine with idle cores is slow on our VM, see :mod:`conditions`)."""
    evaluator = ContextEvaluator(system.system, "CPU", threads=1)
    evaluator.evaluate(x[:4])
    timings = []
    for busy in (False, True):
        with busy_neighbour(busy, max(1, (os.cpu_count() or 1) - 1)):
            timings.append({**rate(lambda: evaluator.evaluate(x), len(x), repeats, min_seconds), "busy": busy})
    return max(timings, key=lambda t: t["wall"])


def torch_rates(field: TorchForceField, x: np.ndarray, device: torch.device, dtype: torch.dtype,
                compiled: bool, args) -> tuple[dict[str, dict[str, float]], float]:
    """Rates per batch size, and the seconds spent in the warm-up calls (compilation)."""
    rates, warm_up = {}, 0.0
    for batch in args.batches:
        positions = torch.as_tensor(x[:batch], dtype=dtype, device=device)

        def call() -> None:
            field.energy_and_force(positions, compiled=compiled)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        start = time.perf_counter()
        call()  # warm-up: buffer conversion, compilation
        warm_up += time.perf_counter() - start
        rates[str(batch)] = rate(call, batch, args.repeats, args.min_seconds)
    return rates, warm_up


def bench_system(name: str, args) -> dict:
    system = load_system(SYSTEMS / f"{name}.yaml")
    rng = np.random.default_rng(0)
    x = system.positions + rng.normal(scale=0.005, size=(max(args.batches), *system.positions.shape))
    baseline = openmm_rate(system, x[:args.openmm_batch], args.repeats, args.min_seconds)
    entry = {"n_atoms": system.n_atoms, "openmm_single_context_cpu_1thread": {
        "evals_per_s": baseline["wall"], "evals_per_cpu_s": baseline["cpu"],
        "other_cores_busy": baseline["busy"]}, "torch": []}
    field = TorchForceField(system.system)
    for device in args.devices:
        for dtype_name in args.dtypes.split(","):
            for mode in args.modes.split(","):
                compiled = mode == "compiled"
                rates, warm_up = torch_rates(field, x, device, getattr(torch, dtype_name), compiled, args)
                entry["torch"].append({
                    "device": str(device), "dtype": dtype_name, "compiled": compiled,
                    "threads": torch.get_num_threads() if device.type == "cpu" else None,
                    "warm_up_s": warm_up,
                    "evals_per_s": {b: r["wall"] for b, r in rates.items()},
                    "evals_per_cpu_s": {b: r["cpu"] for b, r in rates.items()},
                    "speedup_vs_openmm": {b: r["wall"] / baseline["wall"] for b, r in rates.items()},
                    "speedup_vs_openmm_per_cpu_s": {b: r["cpu"] / baseline["cpu"] for b, r in rates.items()}})
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="alanine_dipeptide_implicit")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    parser.add_argument("--devices", default=None,
                        help="comma-separated torch devices (default: cpu, and cuda when available)")
    parser.add_argument("--modes", default="eager,compiled", help="eager and/or compiled (torch.compile)")
    parser.add_argument("--openmm-batch", type=int, default=1024, help="configurations in the OpenMM loop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    default_devices = "cpu,cuda" if torch.cuda.is_available() else "cpu"
    args.devices = [torch.device(d) for d in (args.devices or default_devices).split(",")]
    if not set(args.modes.split(",")) <= {"eager", "compiled"}:
        parser.error(f"--modes: {args.modes!r} is not a comma-separated list of eager, compiled")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    report = {
        "benchmark": "torch_forcefield",
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch_threads": args.threads,
        "packages": package_versions(("openmm", "torch", "numpy")),
        "load_average_before": load_before,
        "systems": {name: bench_system(name, args) for name in args.systems.split(",")},
        "load_average_after": os.getloadavg(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
