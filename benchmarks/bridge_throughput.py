"""Bridge throughput: energy+force evaluations/s at batch 1024, pool of 1 and 2 workers vs one Context.

    python benchmarks/bridge_throughput.py [--batch 1024] [--repeats 3] [--out results.json]

For each system the baseline is a plain Python loop over one single-threaded CPU Context
(``setPositions`` + ``getState(energy, forces)``), the measurement FIELD.md §3 reports. The pool
numbers go through the public API (``MolecularSystem.energy`` with autograd, reduced units, policy).
Prints one JSON document; the best of ``--repeats`` timings is kept for each entry.
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
from boltzclf.openmm import load_system
from boltzclf.openmm.pool import ContextEvaluator

SYSTEMS = Path(__file__).resolve().parents[1] / "systems"


def best_rate(evaluate, x, repeats: int) -> float:
    """Evaluations per second (best of ``repeats``) of ``evaluate(x)``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate(x)
        times.append(time.perf_counter() - start)
    return len(x) / min(times)


def bench_system(name: str, batch: int, repeats: int, workers: tuple[int, ...]) -> dict:
    system = load_system(SYSTEMS / f"{name}.yaml")
    rng = np.random.default_rng(0)
    x = system.positions + rng.normal(scale=0.005, size=(batch, *system.positions.shape))
    single = ContextEvaluator(system.system, "CPU", threads=1)
    single.evaluate(x[:8])
    entry = {"n_atoms": system.n_atoms, "batch": batch,
             "single_context_loop_evals_per_s": best_rate(single.evaluate, x, repeats)}
    xt = torch.from_numpy(x).requires_grad_()
    for n in workers:
        pooled = load_system(SYSTEMS / f"{name}.yaml", workers=n)
        pooled.energy(xt[:8])  # start the workers outside the timing

        def energy_and_grad(x_):
            pooled.energy(x_).sum().backward()

        rate = best_rate(energy_and_grad, xt, repeats)
        pooled.close()
        entry[f"pool_{n}_workers_evals_per_s"] = rate
        entry[f"pool_{n}_workers_per_worker_vs_single"] = rate / n / entry["single_context_loop_evals_per_s"]
    if len(workers) > 1:
        entry["scaling_efficiency"] = (entry[f"pool_{workers[-1]}_workers_evals_per_s"]
                                       / entry[f"pool_{workers[0]}_workers_evals_per_s"]
                                       * workers[0] / workers[-1])
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--systems", default="alanine_dipeptide_vacuum,alanine_dipeptide_implicit,chignolin_implicit")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    report = {
        "benchmark": "bridge_throughput",
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "packages": package_versions(("openmm", "torch", "numpy")),
        "systems": {name: bench_system(name, args.batch, args.repeats, (1, 2))
                    for name in args.systems.split(",")},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        from boltzclf.core.atomic import write_text

        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
