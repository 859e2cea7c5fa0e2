"""How the TI part of a learned solvation estimate varies with the number of interpolant samples per level.

On a finished run of ``workflows/aldp_solvation.yaml`` (its window dynamics and one trained method), the
TI part Δ_TI (:func:`~boltzclf.pipelines.solvation_learned.ti_increments`, the same draw as the
workflow's) is recomputed for several evaluation seeds at each sample count, and its spread over seeds
is set beside the error that treats the increments as independent (Σ_i (Var fw_i + Var bw_i)/(4N))^½.

    python benchmarks/solvation_ti_samples.py RUN [--path gb_charges] [--method diffclf]
        [--samples 512,4096] [--seeds 5] [--workflow workflows/aldp_solvation.yaml]

Prints one JSON line per sample count (values in kT, wall seconds); mdtraj's DCD reader may print two
lines of its own first.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from boltzclf.cli.run import load_workflow
from boltzclf.estimators.interpolant_ti import ti_part
from boltzclf.openmm.system import load_system
from boltzclf.pipelines.experiment import load_trained
from boltzclf.pipelines.solvation_learned import (end_ensembles, pair_permutations, relabelled_held_out,
                                                  ti_increments)
from boltzclf.pipelines.solvation_windows import collect_windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="output folder of a finished solvation run")
    parser.add_argument("--path", default="gb_charges", choices=("gb_charges", "full_gb"))
    parser.add_argument("--method", default="diffclf")
    parser.add_argument("--samples", default="512,4096", help="comma-separated samples per level")
    parser.add_argument("--seeds", type=int, default=5, help="evaluation seeds 0 … seeds − 1")
    parser.add_argument("--workflow", default="workflows/aldp_solvation.yaml")
    args = parser.parse_args()
    workflow, _ = load_workflow(args.workflow, None)
    system = load_system(workflow.system)
    lambdas = np.asarray(workflow.windows[args.path], dtype=np.float64)
    samples = collect_windows(system, args.path, lambdas, workflow.dynamics.walkers, args.run / args.path / "dynamics")
    ends = end_ensembles(samples, workflow.dynamics.walkers, workflow.learned.held_out)
    permutations = pair_permutations(workflow.learned, system, args.path, ends)  # the pairs as the run drew them
    ends = relabelled_held_out(ends, permutations, workflow.learned.seed)
    model, _ = load_trained(args.run / args.path / "learned" / args.method, torch.device("cpu"))
    dtype = next(model.parameters()).dtype
    start, end = ends.start.to(dtype), ends.end.to(dtype)
    for n in (int(v) for v in args.samples.split(",")):
        started = time.perf_counter()
        parts, errors = [], []
        for seed in range(args.seeds):
            forward, backward = ti_increments(model, start, end, n, torch.Generator().manual_seed(seed),
                                              permutations)
            parts.append(ti_part(forward, backward))
            errors.append(float(((forward.var(1) + backward.var(1)) / (4 * n)).sum().sqrt()))
        print(json.dumps({"path": args.path, "method": args.method, "samples_per_level": n,
                          "ti_kT": [round(v, 4) for v in parts], "std_over_seeds_kT": float(np.std(parts, ddof=1)),
                          "independent_error_kT": float(np.mean(errors)),
                          "wall_s": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
