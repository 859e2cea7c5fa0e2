"""Cost of a training step per sample: DSM vs DSM + DiffCLF (binary and multi-class), in one run.

Usage::

    python benchmarks/loss_cost.py [--dim 32] [--batch 512] [--repeats 20] [--out benchmarks/results/loss_cost.json]

For each device (CPU, and CUDA when available) it times full optimiser steps (loss, backward, Adam)
of the same model on the same data for:

* ``dsm_k1``      plain DSM, one level per data sample;
* ``dsm_k2``, ``dsm_k4``  compute-matched DSM baselines (each data sample replicated at 2 or 4 levels);
* ``diffclf_k2``  DSM + binary DiffCLF (2 levels per data sample, 2 cross evaluations);
* ``diffclf_k4``  DSM + multi-class DiffCLF (4 distinct levels, 12 cross evaluations);
* ``*_one``       the same objectives estimated by classifying one sample per row (1 or 3 cross
  evaluations; unbiased for exchangeable level draws).

Reported per method: seconds per step, per data sample and per noisy sample (level evaluation), and
ratios to DSM on the same number of noisy samples (``dsm_k{k}``: the compute-matched baseline) and to
plain DSM per data sample. Medians over ``--repeats`` steps after warm-up.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from boltzclf.diffusion import VariancePreserving, log_snr_grid
from boltzclf.losses import LossConfig, build_loss
from boltzclf.models import EnergyModel, TimeConditionedMLP
from boltzclf.targets.gmm import mog40

METHODS = {
    "dsm_k1": LossConfig("dsm", k=1),
    "dsm_k2": LossConfig("dsm", k=2),
    "dsm_k4": LossConfig("dsm", k=4),
    "diffclf_k2": LossConfig("diffclf", k=2),
    "diffclf_k4": LossConfig("diffclf", k=4),
    "diffclf_k2_one": LossConfig("diffclf", k=2, classify="one"),
    "diffclf_k4_one": LossConfig("diffclf", k=4, classify="one"),
}


def time_steps(loss_cfg: LossConfig, dim: int, batch: int, repeats: int, device: torch.device) -> float:
    """Median seconds per optimiser step."""
    torch.manual_seed(0)
    levels = log_snr_grid(VariancePreserving(), 1e-3, 0.999, 128)
    model = EnergyModel(TimeConditionedMLP(dim, 128, 4, 64), VariancePreserving(), levels, 1.0, (dim,)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss = build_loss(loss_cfg)
    data = mog40(dim).to(device=device, dtype=torch.float32).sample(batch, torch.Generator(device=device).manual_seed(0))
    generator = torch.Generator(device=device).manual_seed(1)
    times = []
    for i in range(repeats + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        total = loss(model, (data,), generator)["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default="benchmarks/results/loss_cost.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    report = {"dim": args.dim, "batch": args.batch, "repeats": args.repeats, "torch": torch.__version__,
              "cpu_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "results": {}}
    for device in devices:
        rows = {}
        for name, cfg in METHODS.items():
            step = time_steps(cfg, args.dim, args.batch, args.repeats, device)
            rows[name] = {"s_per_step": step, "s_per_data_sample": step / args.batch,
                          "s_per_noisy_sample": step / (args.batch * cfg.k)}
        for name in ("diffclf_k2", "diffclf_k4", "diffclf_k2_one", "diffclf_k4_one"):
            k = METHODS[name].k
            rows[name]["ratio_to_dsm_per_noisy_sample"] = (rows[name]["s_per_noisy_sample"]
                                                           / rows[f"dsm_k{k}"]["s_per_noisy_sample"])
            rows[name]["ratio_to_dsm_k1_per_data_sample"] = rows[name]["s_per_data_sample"] / rows["dsm_k1"]["s_per_data_sample"]
        report["results"][device.type] = rows
        print(json.dumps({device.type: rows}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
