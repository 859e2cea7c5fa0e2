"""``boltzclf pmf TRAJ --system SYSTEM.yaml --cv phi,psi --out DIR``: free-energy surfaces in kT."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from boltzclf.cli.common import positive_int
from boltzclf.core import atomic, rundir
from boltzclf.core.errors import BoltzclfError

#: Ramachandran boxes (degrees) reported when the CVs are ``phi,psi``: (φ range, ψ range).
RAMACHANDRAN_BASINS = {
    "C5": ((-180.0, -115.0), (115.0, 180.0)),
    "PII": ((-115.0, -50.0), (115.0, 180.0)),
    "C7eq": ((-115.0, -50.0), (30.0, 115.0)),
    "alphaR": ((-115.0, -40.0), (-75.0, 0.0)),
    "alphaL_C7ax": ((30.0, 100.0), (-90.0, 90.0)),
}


def register(subparsers) -> None:
    """Add the ``pmf`` sub-command."""
    p = subparsers.add_parser(
        "pmf", help="free-energy surface (PMF) of CVs along a trajectory",
        description="Histogram free energies in kT (−ln of the normalised density) with block-bootstrap "
        "errors: a 2-D surface for two CVs and 1-D PMFs per CV. Writes pmf.json, pmf.npz, pmf.png.")
    p.add_argument("trajectory", type=Path,
                   help="a `boltzclf simulate` output directory, or a trajectory file mdtraj reads")
    p.add_argument("--system", type=Path, required=True, help="system spec YAML")
    p.add_argument("--cv", default="phi,psi", help="comma-separated CV names (one or two)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--top", type=Path, default=None, help="topology file (default: the system's)")
    p.add_argument("--log-weights", type=Path, default=None, help=".npy of per-frame log-weights")
    p.add_argument("--bins", type=positive_int, default=36, help="bins per CV (36 = 10 degrees for angles)")
    p.add_argument("--blocks", type=positive_int, default=20, help="contiguous blocks for the bootstrap")
    p.add_argument("--bootstrap", type=positive_int, default=200, help="bootstrap replicates")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(handler=run)


def _trajectory_files(path: Path, top: Path | None) -> tuple[Path, Path | None]:
    if path.is_dir():
        path = path / "trajectory.dcd"
        top = top or path.with_name("topology.pdb")
    if not path.is_file():
        raise BoltzclfError(f"{path}: trajectory not found")
    return path, top


def _log_weights(path: Path | None, n_frames: int) -> np.ndarray | None:
    if path is None:
        return None
    try:
        values = np.load(path)
    except (OSError, ValueError) as exc:
        raise BoltzclfError(f"--log-weights {path}: cannot read ({exc})") from None
    if values.shape != (n_frames,):
        raise BoltzclfError(f"--log-weights {path}: expected shape ({n_frames},), got {values.shape}")
    return values


def run(args: argparse.Namespace) -> int:
    import torch

    from boltzclf.estimators.pmf import basin_minima, histogram_free_energy
    from boltzclf.openmm import load_system
    from boltzclf.openmm.cvs import make_cv
    from boltzclf.plots.pmf import pmf_figure

    system = load_system(args.system)
    names = [n.strip() for n in args.cv.split(",") if n.strip()]
    if not 1 <= len(names) <= 2:
        raise BoltzclfError(f"--cv {args.cv}: give one or two CV names")
    cvs = [make_cv(n, system.mdtraj_topology, system.positions) for n in names]
    traj_path, top = _trajectory_files(args.trajectory, args.top)
    frames = system.load_frames(traj_path, top)
    log_w = _log_weights(args.log_weights, len(frames))
    inputs = [p for p in (traj_path, top, args.system, args.log_weights) if p is not None]
    config = {"command": "pmf", "trajectory": str(traj_path.resolve()), "system": str(args.system.resolve()),
              "cv": names, "bins": args.bins, "blocks": args.blocks, "bootstrap": args.bootstrap,
              "seed": args.seed, "log_weights": str(args.log_weights) if args.log_weights else None}
    with torch.no_grad():
        values = np.column_stack([cv(torch.from_numpy(frames)).numpy() for cv in cvs])
    ranges = [(-np.pi, np.pi) if cv.periodic else (values[:, i].min(), np.nextafter(values[:, i].max(), np.inf))
              for i, cv in enumerate(cvs)]
    options = dict(bins=args.bins, log_weights=log_w, n_blocks=args.blocks, n_bootstrap=args.bootstrap,
                   seed=args.seed)
    profiles = [histogram_free_energy(values[:, i], [ranges[i]], periodic=cv.periodic, **options)
                for i, cv in enumerate(cvs)]
    surface = (histogram_free_energy(values, ranges, periodic=[cv.periodic for cv in cvs], **options)
               if len(cvs) == 2 else None)
    results = {"n_frames": len(frames), "cv": [{"name": cv.name, "unit": cv.unit, "periodic": cv.periodic}
                                               for cv in cvs],
               "units": "kT; F = -ln(normalised density), angles in rad",
               "kT_kJ_per_mol": system.kT, "kT_kcal_per_mol": system.kT / 4.184,
               "profiles": {cv.name: p.to_dict() for cv, p in zip(cvs, profiles)}}
    if surface is not None:
        results["surface"] = surface.to_dict()
        if names == ["phi", "psi"]:
            boxes = {k: [tuple(np.radians(r)) for r in v] for k, v in RAMACHANDRAN_BASINS.items()}
            results["basins"] = basin_minima(surface, boxes)
    out = rundir.prepare(args.out, config, seed=args.seed, device="cpu", inputs=inputs)
    arrays = {f"{cv.name}_free_energy": p.free_energy for cv, p in zip(cvs, profiles)}
    arrays.update({f"{cv.name}_stderr": p.stderr for cv, p in zip(cvs, profiles)})
    arrays.update({f"{cv.name}_edges": p.edges[0] for cv, p in zip(cvs, profiles)})
    if surface is not None:
        arrays.update(surface_free_energy=surface.free_energy, surface_stderr=surface.stderr)
    arrays["cv_values"] = values
    atomic.save_npz(out / "pmf.npz", **arrays)
    labels = [f"{cv.name} / {'deg' if cv.periodic else cv.unit}" for cv in cvs]
    title = f"{system.spec.name}: {len(frames)} frames of {traj_path.name}" + (", weighted" if log_w is not None else "")
    figure = pmf_figure(surface, profiles, labels, [cv.periodic for cv in cvs], title=title)
    atomic.save_figure(out / "pmf.png", figure)
    atomic.write_json(out / "pmf.json", results)
    for name, basin in results.get("basins", {}).items():
        if basin["free_energy_kT"] is not None:
            phi, psi = np.degrees(basin["location"])
            print(f"{name:12s} min at ({phi:7.1f}, {psi:7.1f}) deg: "
                  f"{basin['free_energy_kT']:5.2f} ± {basin['stderr_kT']:.2f} kT")
    print(f"wrote {out / 'pmf.json'}, pmf.npz, pmf.png ({len(frames)} frames)")
    return 0

