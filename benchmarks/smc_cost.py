"""Cost per particle per level of the samplers on a learned energy, as ratios in one run.

Usage::

    python benchmarks/smc_cost.py [--dim 8] [--particles 4096] [--levels 32] [--repeats 3]
                                  [--devices cpu,cuda] [--out benchmarks/results/smc_cost.json]

On the same freshly built energy model (MLP 3 × 64 behind the EDM preconditioning, VP, log-SNR grid)
and the same true target (MOG-40 in ``--dim``), it times, per device:

* ``ancestral``      the unweighted reverse diffusion (isotropic DDPM kernel: one score per level);
* ``smc``            SMC with the same kernel (log-density + score per level, kernel densities, resampling);
* ``smc_mala1``, ``smc_mala4``  SMC with 1 or 4 MALA moves per level;
* ``smc_hessian``    SMC with the Hessian posterior variance (D extra backward passes per level).

Reported: seconds per run (median of ``--repeats``), microseconds per particle per level, and the ratio
to ``ancestral`` on the same device. CUDA is timed only when available (``--devices`` filters).
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
from boltzclf.models import EnergyModel, TimeConditionedMLP
from boltzclf.sampling.ancestral import ancestral_sample
from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.paths import LearnedPath
from boltzclf.sampling.smc import SMCSettings, smc
from boltzclf.targets.gmm import mog40

VARIANTS = {  # name: (posterior variance, MALA moves per level); None = ancestral
    "ancestral": None,
    "smc": ("isotropic", 0),
    "smc_mala1": ("isotropic", 1),
    "smc_mala4": ("isotropic", 4),
    "smc_hessian": ("hessian", 0),
}


def build(dim: int, levels: int, device: torch.device) -> EnergyModel:
    torch.manual_seed(0)
    process = VariancePreserving()
    net = TimeConditionedMLP(dim, hidden=64, n_layers=3, time_dim=64)
    for p in net.output.parameters():  # a non-trivial energy (a fresh net is exactly the Gaussian)
        torch.nn.init.normal_(p, std=0.05)
    return EnergyModel(net, process, log_snr_grid(process, 1e-3, 0.9999, levels), 1.0, (dim,)).to(device).eval()


def run_variant(name: str, model, target, particles: int, device: torch.device) -> None:
    generator = torch.Generator(device=device).manual_seed(0)
    spec = VARIANTS[name]
    if spec is None:
        ancestral_sample(model, particles, generator, batch_size=particles)
        return
    variance, moves = spec
    path = LearnedPath(model, final_target=target)
    kernels = DiffusionKernels(model.process, path.times, model, 1.0, "ddpm", variance)
    smc(path, kernels, SMCSettings(particles, 16, mcmc_steps=moves, mcmc_step_size=1e-4), generator,
        device=device)


def time_variant(name: str, model, target, particles: int, repeats: int, device: torch.device) -> float:
    run_variant(name, model, target, min(particles, 256), device)  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run_variant(name, model, target, particles, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--particles", type=int, default=4096)
    parser.add_argument("--levels", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    devices = [torch.device(d) for d in args.devices.split(",") if d == "cpu" or torch.cuda.is_available()]
    report = {"dim": args.dim, "particles": args.particles, "levels": args.levels, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(), "devices": {}}
    for device in devices:
        model = build(args.dim, args.levels, device)
        target = mog40(args.dim).to(device=device, dtype=torch.float32)
        rows = {}
        for name in VARIANTS:
            seconds = time_variant(name, model, target, args.particles, args.repeats, device)
            rows[name] = {"seconds": seconds, "us_per_particle_level": 1e6 * seconds / (args.particles * (args.levels - 1))}
        base = rows["ancestral"]["seconds"]
        for row in rows.values():
            row["ratio_to_ancestral"] = row["seconds"] / base
        report["devices"][device.type] = rows
        for name, row in rows.items():
            print(f"{device.type:5s} {name:12s} {row['seconds']:8.3f} s  {row['us_per_particle_level']:8.2f} µs/particle/level"
                  f"  ×{row['ratio_to_ancestral']:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
