"""``boltzclf simulate SYSTEM.yaml --out DIR --ns N``: resumable Langevin MD reference data."""
from __future__ import annotations

import argparse
from pathlib import Path

from boltzclf.core import rundir
from boltzclf.core.config import to_dict


def register(subparsers) -> None:
    """Add the ``simulate`` sub-command."""
    p = subparsers.add_parser(
        "simulate", help="run Langevin MD of a system spec (resumable)",
        description="Langevin MD (OpenMM LangevinMiddleIntegrator) of a system spec. Writes "
        "trajectory.dcd + topology.pdb (mdtraj-readable), energies.npz (per-frame reduced energies in "
        "kT), config.json, metadata.json and results.json into --out. Re-running the same command "
        "resumes an interrupted run exactly.")
    p.add_argument("system", type=Path, help="system spec YAML (see systems/)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--ns", type=float, required=True, help="production length in ns")
    p.add_argument("--temperature", type=float, default=None, help="K (default: the spec's)")
    p.add_argument("--timestep-fs", type=float, default=1.0, help="integration timestep in fs")
    p.add_argument("--friction", type=float, default=1.0, help="Langevin friction in 1/ps")
    p.add_argument("--stride-ps", type=float, default=0.1, help="ps between saved frames")
    p.add_argument("--seed", type=int, default=0, help="random seed (velocities and integrator)")
    p.add_argument("--equilibration-ps", type=float, default=10.0, help="unsaved equilibration (ps)")
    p.add_argument("--no-minimize", action="store_true", help="skip energy minimisation")
    p.add_argument("--platform", default="CPU", help="OpenMM platform (CPU, CUDA, Reference)")
    p.add_argument("--threads", type=int, default=2, help="CPU platform threads")
    p.add_argument("--checkpoint-frames", type=int, default=1000, help="frames between checkpoints")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from boltzclf.openmm import load_system
    from boltzclf.openmm.md import MDConfig, simulate

    system = load_system(args.system)
    config = MDConfig(
        ns=args.ns, temperature=args.temperature or system.temperature, timestep_fs=args.timestep_fs,
        friction_per_ps=args.friction, stride_ps=args.stride_ps, seed=args.seed,
        equilibration_ps=args.equilibration_ps, minimize=not args.no_minimize,
        platform=args.platform, threads=args.threads, checkpoint_frames=args.checkpoint_frames)
    inputs = [args.system] + ([system.spec.source.pdb] if system.spec.kind == "pdb" else [])
    resolved = {"command": "simulate", "system": to_dict(system.spec), "md": to_dict(config)}
    out = rundir.prepare(args.out, resolved, seed=args.seed, device=args.platform, inputs=inputs)
    results = simulate(system, config, out, progress=not args.no_progress)
    print(f"{results['n_frames']} frames ({results['simulated_ns']:g} ns) in {out}; "
          f"{results['ns_per_day'] or float('nan'):.1f} ns/day on {config.platform} x{config.threads}")
    return 0
