"""Batched-dynamics throughput on 1 and 2 processes (walkers shared under ``torchrun``; gloo on CPU,
NCCL on GPUs) and the scaling efficiency, side by side in one run.

    python benchmarks/distributed_dynamics.py [--walkers 512] [--ns 0.004] [--device cpu|cuda] [--compiled]
        [--out benchmarks/results/distributed_dynamics_2cpu.json]

Each configuration runs ``boltzclf simulate --engine torch`` of alanine dipeptide (implicit solvent,
float32, no equilibration, 2 temperatures with replica exchange) with the same global ``--walkers``
columns in a fresh run directory, and reads the wall time the engine records (every step,
checkpoints and chunk writes included; the final DCD writing excluded). Eager by default, so that
compilation time does not enter a short run. On CPU, configurations:

* ``1 process x 1 thread``: the baseline;
* ``2 processes x 1 thread``: the columns split in two; ``efficiency`` = throughput / (2 × baseline);
* ``1 process x 2 threads``: the other way to use the same two cores.

On CUDA the processes are ``1 GPU`` and ``2 GPUs`` (needs two). Reported: aggregate simulated ns per
day over all walkers and the ratios.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from scaling import REPO, configurations, environment, launcher, report

SPEC = REPO / "systems" / "alanine_dipeptide_implicit.yaml"


def measure(args: argparse.Namespace, processes: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = launcher(processes) + [
            "-m", "boltzclf", "simulate", str(SPEC), "--engine", "torch", "--out", str(out), "--ns", str(args.ns),
            "--walkers", str(args.walkers), "--replicas", "2", "--max-temperature", "400", "--exchange-ps", "0.1",
            "--stride-ps", "1.0", "--equilibration-ps", "0", "--checkpoint-frames", "10", "--threads", str(threads),
            "--device", args.device, "--no-progress"] + ([] if args.compiled else ["--no-compile"])
        subprocess.run(command, env=environment(threads), capture_output=True, text=True, check=True)
        results = json.loads((out / "results.json").read_text())
    return {"processes": processes, "threads_per_process": threads, "wall_s": results["wall_s"],
            "aggregate_ns_per_day": results["aggregate_ns_per_day"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walkers", type=int, default=512)
    parser.add_argument("--ns", type=float, default=0.004)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compiled", action="store_true", help="torch.compile the force field")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    runs = {name: measure(args, *shape) for name, shape in configurations(args.device).items()}
    report("distributed_dynamics", {"device": args.device, "system": SPEC.name, "walkers": args.walkers,
                                    "replicas": 2, "ns_per_walker": args.ns, "compiled": args.compiled},
           runs, "aggregate_ns_per_day", args.out)


if __name__ == "__main__":
    main()
