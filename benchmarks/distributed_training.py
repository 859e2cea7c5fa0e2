"""Training throughput on 1 and 2 processes (torch DDP, gloo on CPU; NCCL on GPUs) and the scaling
efficiency, side by side in one run.

    python benchmarks/distributed_training.py [--steps 120] [--batch 1024] [--hidden 256]
        [--device cpu|cuda] [--out benchmarks/results/distributed_training_2cpu.json]

Each configuration trains the same DiffCLF experiment (MOG-40-like mixture target, d = 8, an MLP of
``--hidden`` × 4, global batch ``--batch`` in 2 shards) through :func:`train_experiment` in fresh
processes started by ``torchrun`` (or plainly for one process), and times the steps after a warm-up
of 20 with an ``on_step`` hook on rank 0. On CPU, configurations:

* ``1 process x 1 thread``: the baseline per process;
* ``2 processes x 1 thread``: DDP; ``efficiency`` = throughput / (2 × baseline);
* ``1 process x 2 threads``: the other way to use the same two cores.

On CUDA the processes are ``1 GPU`` and ``2 GPUs`` (needs two). Reported: global samples/s, per
process, and the ratios.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from scaling import configurations, environment, launcher, report

WARM_UP = 20


def child(args: argparse.Namespace) -> None:
    """One timed training run (in a process of its own, possibly one of several ranks)."""
    import torch

    from boltzclf.core import distributed
    from boltzclf.core.config import from_mapping
    from boltzclf.pipelines.experiment import train_experiment
    from boltzclf.training.config import ExperimentConfig

    torch.set_num_threads(args.threads)
    device = distributed.init_from_environment(torch.device(args.device))
    config = from_mapping(ExperimentConfig, {
        "target": {"name": "mog40", "dim": 8},
        "grid": {"kind": "log_snr", "n_levels": 64, "t_min": 1.0e-3, "t_max": 0.9999},
        "model": {"hidden": args.hidden, "n_layers": 4, "time_dim": 64},
        "loss": {"kind": "diffclf", "k": 2, "pairs": "adjacent"},
        "training": {"steps": args.steps + WARM_UP, "batch_size": args.batch, "dataset_size": 0, "shards": 2,
                     "checkpoint_every": args.steps + WARM_UP, "log_every": args.steps + WARM_UP, "ema": 0.0},
    }, "benchmark")
    marks = {}

    def on_step(done: int) -> None:
        if done in (WARM_UP, WARM_UP + args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks[done] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        train_experiment(config, Path(out) / "run", device, on_step=on_step)
    if distributed.is_main():
        seconds = marks[WARM_UP + args.steps] - marks[WARM_UP]
        print(json.dumps({"processes": distributed.world_size(), "threads_per_process": args.threads,
                          "samples_per_s": args.steps * args.batch / seconds, "s_per_step": seconds / args.steps}))
    distributed.close()  # leave the group together: a rank exiting mid-teardown aborts gloo's threads


def measure(args: argparse.Namespace, processes: int, threads: int) -> dict:
    command = launcher(processes) + [__file__, "--child", "--threads", str(threads), "--steps", str(args.steps),
                                     "--batch", str(args.batch), "--hidden", str(args.hidden), "--device", args.device]
    done = subprocess.run(command, env=environment(threads), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    runs = {name: measure(args, *shape) for name, shape in configurations(args.device).items()}
    report("distributed_training", {"device": args.device, "steps_timed": args.steps, "global_batch": args.batch,
                                    "hidden": args.hidden}, runs, "samples_per_s", args.out)


if __name__ == "__main__":
    main()
