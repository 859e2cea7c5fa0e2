"""``boltzclf simulate SYSTEM.yaml --out DIR --ns N``: resumable Langevin MD reference data.

Two engines: ``openmm`` (one OpenMM Context, LangevinMiddleIntegrator; parallel tempering through
openmmtools) and ``torch`` (many walkers and temperatures in one tensor on the torch force field,
BAOAB; batched temperature replica exchange), see :mod:`boltzclf.dynamics`. Under ``torchrun`` the
torch engine shares the walkers out over the processes (:mod:`boltzclf.dynamics.engine`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from boltzclf.cli.common import seed
from boltzclf.core import distributed, rundir
from boltzclf.core.device import resolve_device
from boltzclf.core.config import to_dict
from boltzclf.core.errors import BoltzclfError

DEFAULT_STRIDE_PS = {"openmm": 0.1, "torch": 1.0}
DEFAULT_CHECKPOINT_FRAMES = {"openmm": 1000, "torch": 50}


def register(subparsers) -> None:
    """Add the ``simulate`` sub-command."""
    p = subparsers.add_parser(
        "simulate", help="run Langevin MD of a system spec (resumable; OpenMM or batched torch)",
        description="Langevin MD of a system spec. --engine openmm: one OpenMM Context "
        "(LangevinMiddleIntegrator; --replicas > 1 runs openmmtools parallel tempering). --engine torch: "
        "--walkers independent BAOAB walkers per temperature in one tensor on the torch force field "
        "(CUDA when present; --replicas > 1 adds batched temperature replica exchange). Writes "
        "trajectory.dcd + topology.pdb (mdtraj-readable; the torch engine writes W walkers time-major), "
        "energies.npz (per-frame reduced energies in kT), config.json, metadata.json and results.json "
        "into --out. Re-running the same command resumes an interrupted run. Under torchrun the torch "
        "engine splits the --walkers columns over the processes (one GPU each); resume with as many.")
    p.add_argument("system", type=Path, help="system spec YAML (see systems/)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--ns", type=float, required=True, help="production length in ns (per walker)")
    p.add_argument("--engine", choices=("openmm", "torch"), default="openmm",
                   help="openmm: one Context; torch: batched walkers on the torch force field")
    p.add_argument("--temperature", type=float, default=None, help="K (default: the spec's)")
    p.add_argument("--timestep-fs", type=float, default=1.0, help="integration timestep in fs")
    p.add_argument("--friction", type=float, default=1.0, help="Langevin friction in 1/ps")
    p.add_argument("--stride-ps", type=float, default=None,
                   help="ps between saved frames (default 0.1 for openmm, 1.0 for torch)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (velocities and integrator)")
    p.add_argument("--equilibration-ps", type=float, default=10.0, help="unsaved equilibration (ps)")
    p.add_argument("--no-minimize", action="store_true", help="skip energy minimisation")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (OpenMM platform or torch)")
    p.add_argument("--checkpoint-frames", type=int, default=None,
                   help="frames between checkpoints (default 1000 for openmm, 50 for torch)")
    p.add_argument("--replicas", type=int, default=1, help="> 1: replica exchange over this many temperatures")
    p.add_argument("--max-temperature", type=float, default=None,
                   help="K, highest replica-exchange temperature (geometric ladder)")
    openmm_group = p.add_argument_group("openmm engine")
    openmm_group.add_argument("--platform", default="CPU", help="OpenMM platform (CPU, CUDA, Reference)")
    torch_group = p.add_argument_group("torch engine")
    torch_group.add_argument("--walkers", type=int, default=1024, help="walkers per temperature")
    torch_group.add_argument("--exchange-ps", type=float, default=0.1, help="ps between exchange attempts")
    torch_group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    torch_group.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                             help="positions and forces (energies accumulate in float64)")
    torch_group.add_argument("--no-compile", action="store_true",
                             help="skip torch.compile (no start-up compilation; 2-3x slower steps)")
    torch_group.add_argument("--chunk-size", type=int, default=None,
                             help="configurations per force evaluation (bounds memory)")
    torch_group.add_argument("--save-all-temperatures", action="store_true",
                             help="also write the frames of every replica-exchange temperature")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=run)


def _default(value, default):
    """``value`` unless the option was not given (a given 0 stays 0 and is then refused)."""
    return default if value is None else value


def _openmm_config(args: argparse.Namespace, temperature: float):
    from boltzclf.openmm.md_config import MDConfig

    return MDConfig(
        ns=args.ns, temperature=temperature, timestep_fs=args.timestep_fs,
        friction_per_ps=args.friction, stride_ps=_default(args.stride_ps, DEFAULT_STRIDE_PS["openmm"]),
        seed=args.seed, equilibration_ps=args.equilibration_ps, minimize=not args.no_minimize,
        platform=args.platform, threads=args.threads,
        checkpoint_frames=_default(args.checkpoint_frames, DEFAULT_CHECKPOINT_FRAMES["openmm"]),
        replicas=args.replicas, max_temperature=args.max_temperature)


def _torch_config(args: argparse.Namespace, temperature: float):
    from boltzclf.dynamics.config import BatchedMDConfig

    return BatchedMDConfig(
        ns=args.ns, temperature=temperature, walkers=args.walkers, replicas=args.replicas,
        max_temperature=args.max_temperature, timestep_fs=args.timestep_fs, friction_per_ps=args.friction,
        stride_ps=_default(args.stride_ps, DEFAULT_STRIDE_PS["torch"]), exchange_ps=args.exchange_ps,
        equilibration_ps=args.equilibration_ps, seed=args.seed, minimize=not args.no_minimize,
        device=args.device, dtype=args.dtype, compiled=not args.no_compile, chunk_size=args.chunk_size,
        checkpoint_frames=_default(args.checkpoint_frames, DEFAULT_CHECKPOINT_FRAMES["torch"]),
        save_all_temperatures=args.save_all_temperatures)


def run(args: argparse.Namespace) -> int:
    from boltzclf.openmm import load_system

    system = load_system(args.system)
    temperature = _default(args.temperature, system.temperature)  # 0 is refused, not replaced
    inputs = [args.system] + ([system.spec.source.pdb] if system.spec.kind == "pdb" else [])
    if args.engine == "openmm":
        from boltzclf.openmm.simulate import simulate

        from boltzclf.openmm.pool import check_platform

        if distributed.launched_by_torchrun():
            raise BoltzclfError("--engine openmm runs in one process; start it without torchrun "
                                "(the torch engine shares its walkers over processes)")
        config, device = _openmm_config(args, temperature), args.platform
        check_platform(config.platform)  # refuse before the run directory exists
    else:
        from boltzclf.dynamics.engine import check_supported, simulate_batched as simulate

        config, device = _torch_config(args, temperature), args.device
        # refuse before the run directory exists, so a corrected retry can use it
        distributed.init_from_environment(resolve_device(device))
        check_supported(system)
        distributed.require_shareable(config.walkers, "--walkers")
        torch.set_num_threads(args.threads)
    resolved = {"command": "simulate", "engine": args.engine, "system": to_dict(system.spec),
                "md": to_dict(config)}
    schema = {"system": type(system.spec), "md": type(config)}
    out = distributed.on_main(lambda: rundir.prepare(args.out, resolved, schema=schema, seed=args.seed, device=device,
                                                     inputs=inputs))
    results = simulate(system, config, out, progress=not args.no_progress)
    if not distributed.is_main():
        return 0
    speed = f"; {results['ns_per_day']:.1f} ns/day" if results.get("ns_per_day") else ""
    if args.engine == "torch":
        print(f"{results['walkers']} walkers x {results['n_frames']} frames "
              f"({results['simulated_ns_per_walker']:g} ns each) in {out}{speed} aggregate over walkers "
              f"on {results['device']}")
    else:
        print(f"{results['n_frames']} frames ({results['simulated_ns']:g} ns) in {out}{speed} "
              f"on {config.platform} x{config.threads}")
    return 0
