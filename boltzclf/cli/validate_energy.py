"""``boltzclf validate-energy SYSTEM.yaml --n 100 --out DIR``: torch force field vs OpenMM."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from boltzclf.cli.common import add_device_argument, device_from, positive_float, positive_int, seed
from boltzclf.core import atomic, rundir
from boltzclf.core.config import to_dict
from boltzclf.core.errors import BoltzclfError


def register(subparsers) -> None:
    """Add the ``validate-energy`` sub-command."""
    p = subparsers.add_parser(
        "validate-energy", help="check the torch force field against OpenMM on a system",
        description="Evaluate random perturbations of the system's structure (and, with --traj, MD "
        "frames) with the torch force field and with OpenMM. Writes DIR/results.json with "
        "max_rel_energy_error, max_force_error (kJ/mol/nm), per-force errors, and timings under equal "
        "conditions: torch_evals_per_s (one batched call of --timing-batch configurations on the path "
        "simulations use: compiled, float32), openmm_evals_per_s (single-Context loop with one thread or "
        "as many as torch, whichever is faster), speedup, and 'timed' saying which paths were timed.")
    p.add_argument("system", type=Path, help="system spec YAML (see systems/)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--n", type=positive_int, default=100, help="number of perturbed configurations")
    p.add_argument("--sigma", type=positive_float, default=0.01, help="perturbation standard deviation in nm")
    p.add_argument("--traj", type=Path, default=None,
                   help="MD trajectory (any mdtraj format; DCD/XTC use the system's topology)")
    p.add_argument("--max-frames", type=positive_int, default=100, help="frames used from --traj (evenly spaced)")
    p.add_argument("--seed", type=seed, default=0, help="random seed of the perturbations")
    p.add_argument("--reference-platform", default="Reference", help="OpenMM platform for accuracy")
    p.add_argument("--platform", default="CPU", help="OpenMM platform of the timed single-Context loop")
    p.add_argument("--timing-batch", type=positive_int, default=1024,
                   help="configurations in the timed batch (the checked ones, repeated)")
    p.add_argument("--no-compile", action="store_true",
                   help="time the eager torch path instead of the compiled one")
    p.add_argument("--timing-dtype", choices=("float64", "float32"), default="float32",
                   help="precision of the timed torch evaluations (accuracy is always checked in float64)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_device_argument(p)
    p.set_defaults(handler=run)


def _trajectory_frames(path: Path, system, max_frames: int) -> np.ndarray:
    """At most ``max_frames`` evenly spaced frames of ``--traj`` [nm]."""
    try:
        frames = system.load_frames(path)
    except BoltzclfError as exc:
        raise BoltzclfError(f"--traj {exc}") from None
    keep = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).astype(int))
    return frames[keep]


def run(args: argparse.Namespace) -> int:
    from boltzclf.forcefield.validation import perturbed_configurations, validate
    from boltzclf.openmm import load_system
    from boltzclf.openmm.pool import check_platform

    device = device_from(args)
    for flag, platform in (("--reference-platform", args.reference_platform), ("--platform", args.platform)):
        try:
            check_platform(platform)
        except BoltzclfError as exc:
            raise BoltzclfError(f"{flag}: {exc}") from None
    system = load_system(args.system)
    inputs = [args.system] + ([args.traj] if args.traj else [])
    resolved = {"command": "validate-energy", "system": to_dict(system.spec), "n": args.n,
                "sigma_nm": args.sigma, "traj": str(args.traj) if args.traj else None,
                "max_frames": args.max_frames, "reference_platform": args.reference_platform,
                "platform": args.platform, "compiled": not args.no_compile, "timing_dtype": args.timing_dtype,
                "timing_batch": args.timing_batch}
    sets = {"perturbed": perturbed_configurations(system.positions, args.n, args.sigma,
                                                  np.random.default_rng(args.seed))}
    if args.traj:
        sets["md"] = _trajectory_frames(args.traj, system, args.max_frames)
    out = rundir.prepare(args.out, resolved, seed=args.seed, device=str(device), inputs=inputs)
    results = validate(system.system, sets, device, args.reference_platform, args.platform,
                       not args.no_compile, getattr(torch, args.timing_dtype), args.timing_batch,
                       progress=not args.no_progress)
    atomic.write_json(out / "results.json", results)
    print(f"max relative energy error {results['max_rel_energy_error']:.2e}, max force error "
          f"{results['max_force_error']:.2e} kJ/mol/nm\ntorch {results['torch_evals_per_s']:.0f}/s, OpenMM "
          f"{results['openmm_evals_per_s']:.0f}/s: {results['speedup']:.1f}x; timed: {results['timed']}\n"
          f"wrote {out / 'results.json'}")
    return 0
