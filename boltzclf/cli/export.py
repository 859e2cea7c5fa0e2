"""``boltzclf export RUN_DIR --out energy.pt``: the learned U(t_min, ·) as a TorchScript module for OpenMM."""
from __future__ import annotations

import argparse
from pathlib import Path

from boltzclf.core.errors import BoltzclfError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write a trained molecular energy as a TorchScript module for openmm-torch",
        description="Trace the learned energy at the first level of a trained molecular run, U(t_min, x), "
        "as a TorchScript module in OpenMM's units (positions (n_atoms, 3) in nm -> energy in kJ/mol, kT of "
        "the run's system temperature; forces by autograd) and save it to FILE for openmm-torch's "
        "TorchForce(FILE). A coarse-grained run's module takes its atoms only, in the run's order.")
    parser.add_argument("run_dir", type=Path, help="directory written by 'boltzclf train' on molecular data")
    parser.add_argument("--out", type=Path, required=True, help="TorchScript file to write (must not exist)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import torch

    from boltzclf.models.export import export_energy
    from boltzclf.openmm import load_system
    from boltzclf.pipelines.experiment import load_trained

    if args.out.exists():
        raise BoltzclfError(f"--out {args.out}: exists; choose a new file (nothing was overwritten)")
    if not (args.run_dir / "checkpoint.pt").exists():
        raise BoltzclfError(f"{args.run_dir}: no checkpoint.pt; not a 'boltzclf train' run directory")
    model, config = load_trained(args.run_dir, torch.device("cpu"))
    if config.data is None:
        raise BoltzclfError(f"{args.run_dir}: trained on an analytic target, not a molecule; nothing to export")
    system = load_system(config.data.system)
    n_atoms = len(config.data.atoms) if config.data.atoms is not None else system.n_atoms
    path = export_energy(model, system.kT, n_atoms, args.out)
    print(f"wrote {path}: U(t_min, x) of {n_atoms} atoms in kJ/mol at {system.temperature:g} K "
          f"(openmmtorch.TorchForce('{path}'))")
    return 0
