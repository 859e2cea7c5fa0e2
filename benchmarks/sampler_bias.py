"""Bias of the reverse samplers with *exact* scores on TwoModes (2:1), and SMC's correction of it.

Usage::

    python benchmarks/sampler_bias.py [--dim 2] [--n 20000] [--out benchmarks/results/sampler_bias.json]

With the exact marginal energy of TwoModes(d) under VP (log-SNR grids from t = 1e-3 to 0.9999), for
32, 128 and 512 levels and each reverse kernel (``ddpm`` with isotropic and with Hessian posterior
variance, ``ei``), it draws ``--n`` ancestral samples and reports the heavy-mode fraction (truth 2/3)
and the within-mode variance ratio to the exact marginal at t_0 (truth 1), each with its standard
error and z-score. SMC (same kernels, 32 levels, true target at level 0) is reported with weighted
estimates and cluster-robust standard errors. The Hessian kernel is skipped at 512 levels (cost).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from boltzclf.diffusion import VariancePreserving, log_snr_grid
from boltzclf.estimators.weighted import clustered_mean, weighted_fractions
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling.ancestral import ancestral_sample
from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.paths import LearnedPath
from boltzclf.sampling.smc import SMCSettings, smc
from boltzclf.targets.gmm import two_modes

KERNELS = (("ddpm", "isotropic"), ("ddpm", "hessian"), ("ei", "isotropic"))


def statistics(samples, log_weights, ancestors, reference) -> dict:
    """Heavy-mode fraction and heavy-mode variance ratio (mean over dimensions), with SEs and z-scores."""
    labels = reference.responsibilities(samples).argmax(1)
    heavy = weighted_fractions(labels, 2, log_weights, ancestors)
    in_heavy = labels == 0
    centred = (samples[in_heavy] - reference.means[0]) ** 2 / reference.variances[0]
    ratio = clustered_mean(centred.mean(1), ancestors[in_heavy], log_weights[in_heavy])
    value, se = float(heavy.value[0]), float(heavy.se[0])
    return {"heavy_fraction": value, "heavy_fraction_se": se, "heavy_fraction_z": (value - 2 / 3) / se,
            "variance_ratio": float(ratio.value), "variance_ratio_se": float(ratio.se),
            "variance_ratio_z": (float(ratio.value) - 1.0) / float(ratio.se)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    process, target = VariancePreserving(), two_modes(args.dim)
    model = MixtureMarginalEnergy(target, process, log_snr_grid(process, 1e-3, 0.9999, 32))
    generator = torch.Generator().manual_seed(0)
    report = {"dim": args.dim, "n": args.n, "ancestral": {}, "smc": {}}
    uniform = torch.full((args.n,), -math.log(args.n), dtype=torch.float64)
    for levels in (32, 128, 512):
        times = log_snr_grid(process, 1e-3, 0.9999, levels)
        reference = target.noised(process, float(times[0]))
        for kind, variance in KERNELS:
            if variance == "hessian" and levels > 128:
                continue
            start = time.perf_counter()
            samples = ancestral_sample(model, args.n, generator, kind=kind, posterior_variance=variance, times=times,
                                       dtype=torch.float64).samples
            row = statistics(samples, uniform, torch.arange(args.n), reference)
            row["seconds"] = time.perf_counter() - start
            report["ancestral"][f"{levels}/{kind}-{variance}"] = row
            print(f"ancestral {levels:4d} {kind}-{variance:9s} heavy {row['heavy_fraction']:.4f} "
                  f"(z {row['heavy_fraction_z']:+.1f})  var ratio {row['variance_ratio']:.4f} "
                  f"(z {row['variance_ratio_z']:+.1f})", flush=True)
    for kind, variance in KERNELS:
        path = LearnedPath(model, final_target=target)
        kernels = DiffusionKernels(process, path.times, model, 1.0, kind, variance)
        result = smc(path, kernels, SMCSettings(n_particles=args.n - args.n % 16, n_groups=16), generator,
                     dtype=torch.float64)
        row = statistics(result.samples, result.log_weights, result.ancestors, target)
        row.update({"ess_final": result.ess_final, "ess_min": float(result.ess.min()), "log_z": result.log_z,
                    "log_z_se": result.log_z_se, "seconds": result.wall_s})
        report["smc"][f"32/{kind}-{variance}"] = row
        print(f"smc        32 {kind}-{variance:9s} heavy {row['heavy_fraction']:.4f} (z {row['heavy_fraction_z']:+.1f})"
              f"  var ratio {row['variance_ratio']:.4f} (z {row['variance_ratio_z']:+.1f})  ESS/N final "
              f"{row['ess_final']:.3f}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
