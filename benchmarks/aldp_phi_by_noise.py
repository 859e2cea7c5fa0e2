"""Where a learned ALDP energy's basin heights go wrong: ΔF(φ > 0 vs φ < 0) of the learned density at
several noise levels σ, against the same ΔF of the reference frames noised to that σ.

    python benchmarks/aldp_phi_by_noise.py RUN_DIR [--method diffclf] [--sigmas 0.05,0.02,0.01,0.005,0.002]
                                           [--particles N] [--seed S] [--out FILE.json]

RUN_DIR is the output of ``boltzclf run workflows/aldp_boltzmann_generator.yaml --out RUN_DIR`` (an
EDM process). For each σ the learned ΔF comes from two SMC walks down the learned levels, from the
prior to the first level at or above σ (``sigma_nm`` records it), each confined there to one side of
φ: the workflow's confined walks (its ``sampling`` particles, seed, groups, MALA moves and log-SNR
level spacing, unless ``--particles`` / ``--seed`` say otherwise), ending there instead of at σ_min;
the true ΔF
from every reference frame plus centred Gaussian noise of that σ (10 draws per frame), with an error
from the spread of the side fractions over the independent walkers. At σ_min the learned value is
the workflow's ``learned_dF_phi``. A learned energy whose heights are right where the noise connects
the basins but drift as σ shrinks shows the drift here level by level.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from boltzclf.core import atomic
from boltzclf.core.config import from_mapping
from boltzclf.diffusion import log_snr_grid
from boltzclf.dynamics.output import load_frames
from boltzclf.evaluation.molecular_samples import PhiSide, chirality
from boltzclf.openmm.system import load_system
from boltzclf.pipelines.boltzmann_generator import BoltzmannGeneratorWorkflow
from boltzclf.pipelines.experiment import load_trained
from boltzclf.pipelines.phi_sides import SIDE_KEYS, phi_free_energy
from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.paths import ConfinedPath, LearnedPath
from boltzclf.sampling.smc import SMCSettings, smc


def true_free_energy(frames: torch.Tensor, sigma: float, region: PhiSide, generator: torch.Generator,
                     draws: int = 10) -> tuple[float, float]:
    """ΔF = −ln(P₊/P₋) [kT] of reference ``frames`` ``(F, W, N, 3)`` [nm] noised to ``sigma`` [nm], and its
    standard error from the W walkers' side fractions (frames of one walker are correlated)."""
    inside = torch.zeros(frames.shape[1], dtype=torch.float64)
    for _ in range(draws):
        noise = torch.randn(frames.shape, generator=generator, dtype=frames.dtype)
        noise = noise - noise.mean(-2, keepdim=True)
        noisy = (frames + sigma * noise).reshape(-1, *frames.shape[2:])
        inside += region.contains(noisy).reshape(frames.shape[:2]).double().mean(0) / draws
    share, se = float(inside.mean()), float(inside.std() / math.sqrt(frames.shape[1]))
    if not 0.0 < share < 1.0:
        return math.nan, math.nan
    return -math.log(share / (1.0 - share)), se / (share * (1.0 - share))


def learned_free_energy(model, times: torch.Tensor, native: float, settings: SMCSettings,
                        seed: int) -> dict:
    """ΔF(φ > 0 vs φ < 0) [kT] of the learned density at ``times[0]`` from the workflow's pair of
    confined SMC walks (:func:`~boltzclf.pipelines.phi_sides.phi_free_energy`) down ``times``, with
    its error and each side's span of group log Ẑ."""
    def walk(region: PhiSide, generator: torch.Generator) -> dict:
        path = LearnedPath(model, times=times)
        confined = ConfinedPath(path, region, region.width(model.process.sigma(path.times)))
        kernels = DiffusionKernels(model.process, path.times, model, model.sigma_data, "ddpm", "isotropic")
        result = smc(confined, kernels, settings, generator)
        return {key: getattr(result, key) for key in SIDE_KEYS}

    sides = phi_free_energy(walk, native, seed)
    return {"learned_dF_phi": sides["dF_phi"], "learned_dF_phi_se": sides["dF_phi_se"],
            "learned_log_z_group_span": {name: float(np.ptp(sides[name]["log_z_groups"].numpy()))
                                         for name in ("phi_positive", "phi_negative")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--method", default="diffclf")
    parser.add_argument("--sigmas", default="0.05,0.02,0.01,0.005,0.002", help="noise levels [nm], comma-separated")
    parser.add_argument("--particles", type=int, default=None, help="default: the workflow's sampling.particles")
    parser.add_argument("--seed", type=int, default=None, help="default: the workflow's sampling.seed")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    workflow = from_mapping(BoltzmannGeneratorWorkflow, json.loads((args.run / "config.json").read_text()),
                            str(args.run / "config.json"))
    model, config = load_trained(args.run / args.method, torch.device("cpu"))
    if model.process.kind != "edm":
        raise SystemExit(f"{args.run / args.method}: needs an EDM process (σ(t) = t), got {model.process.kind}")
    positions = load_system(config.data.system).positions
    native = float(chirality(torch.as_tensor(positions, dtype=torch.float64)[None])[0])
    reference = Path(workflow.reference.run) if workflow.reference.run else args.run / "reference"
    frames = torch.from_numpy(load_frames(reference / "dynamics")).to(torch.float64)
    sampling = workflow.sampling
    particles = args.particles or sampling.particles
    seed = sampling.seed if args.seed is None else args.seed
    grid = (log_snr_grid(model.process, float(model.levels[0]), float(model.levels[-1]), sampling.levels)
            if sampling.levels else model.levels.to(torch.float64))
    settings = SMCSettings(particles, sampling.groups, sampling.resample_threshold, 0, sampling.mcmc_steps,
                           mcmc_step_size=sampling.step_size)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for requested in (float(value) for value in args.sigmas.split(",")):
        times = grid[model.process.sigma(grid) >= requested * (1 - 1e-6)]
        sigma = float(model.process.sigma(times[:1]))
        true_value, true_se = true_free_energy(frames, sigma, PhiSide(native, 1), generator)
        rows.append({"sigma_nm": sigma, "levels": len(times), "true_dF_phi": true_value, "true_dF_phi_se": true_se,
                     **learned_free_energy(model, times, native, settings, seed)})
        print(json.dumps(rows[-1]), flush=True)
    text = json.dumps({"benchmark": "aldp_phi_by_noise", "run": str(args.run), "method": args.method,
                       "particles": particles, "seed": seed, "rows": rows}, indent=2)
    print(text)
    if args.out:
        atomic.write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
