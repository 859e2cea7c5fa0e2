"""SMC on the trained models of an ``smc_comparison`` run, repeated over seeds: the mean |log Ẑ − log Z|,
SE, min and final ESS/N and mode-weight error per method, side by side.

    python benchmarks/smc_seeds.py RUN_DIR [--target mog40] [--seeds 10] [--out FILE.json]

RUN_DIR is the output of ``boltzclf run workflows/gmm_smc.yaml --out RUN_DIR``; SMC uses the run's own
options (particles, groups, kernel, resampling) with seeds 0 … seeds − 1, so the workflow's single-seed
figures can be read against their spread.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from boltzclf.core import atomic
from boltzclf.core.config import from_mapping
from boltzclf.evaluation.weighted_samples import weighted_sample_metrics
from boltzclf.pipelines.experiment import load_trained
from boltzclf.pipelines.smc_workflow import SMCComparisonWorkflow, path_times
from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.paths import LearnedPath
from boltzclf.sampling.smc import smc
from boltzclf.training.config import build_target


def one_seed(model, config, options, seed: int) -> dict:
    target = build_target(config.target)
    path = LearnedPath(model, final_target=target, times=path_times(config, options.levels))
    kernels = DiffusionKernels(model.process, path.times, model, model.sigma_data, options.kernel,
                               options.posterior_variance)
    result = smc(path, kernels, options.settings(), torch.Generator().manual_seed(seed))
    metrics = weighted_sample_metrics(result.samples, result.log_weights, result.ancestors, target, seed)
    return {"abs_log_z_error": abs(result.log_z), "log_z_se": result.log_z_se, "ess_min": float(result.ess.min()),
            "ess_final": result.ess_final, "mode_weight_error": metrics["mode_weight_error"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--target", default="mog40")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    workflow = from_mapping(SMCComparisonWorkflow, json.loads((args.run / "config.json").read_text()),
                            str(args.run / "config.json"))
    report = {"benchmark": "smc_seeds", "run": str(args.run), "target": args.target, "seeds": args.seeds,
              "methods": {}}
    for method in workflow.methods:
        model, config = load_trained(args.run / args.target / method, torch.device("cpu"))
        rows = [one_seed(model, config, workflow.smc, seed) for seed in range(args.seeds)]
        report["methods"][method] = {key: {"mean": float(np.mean([r[key] for r in rows])),
                                           "sd": float(np.std([r[key] for r in rows], ddof=1))}
                                     for key in rows[0]}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        atomic.write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
