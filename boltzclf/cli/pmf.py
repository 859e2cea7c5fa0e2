"""``boltzclf pmf TRAJ --system SYSTEM.yaml --cv phi,psi --out DIR``: free-energy surfaces in kT."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from boltzclf.cli.common import positive_float, positive_int, seed
from boltzclf.core import atomic, rundir
from boltzclf.core.errors import BoltzclfError, one_line
from boltzclf.openmm.cvs import CV_NAMES

#: Ramachandran boxes (degrees) reported when the CVs are ``phi,psi``: (φ range, ψ range), each the
#: half-open interval ``low <= angle < high`` of angles wrapped into [−180°, 180°) (like the histogram's
#: bins and :mod:`boltzclf.estimators.populations`), so boxes that share an edge are disjoint.
RAMACHANDRAN_BASINS = {
    "C5": ((-180.0, -115.0), (115.0, 180.0)),
    "PII": ((-115.0, -50.0), (115.0, 180.0)),
    "C7eq": ((-115.0, -50.0), (30.0, 115.0)),
    "alphaR": ((-115.0, -40.0), (-75.0, 0.0)),
    "alphaL_C7ax": ((30.0, 100.0), (-90.0, 90.0)),
}

BASIN_DEFINITION = ("free_energy_kT = -ln P(basin), absolute (not shifted; the profiles' free_energy_kT is "
                    "-ln of the normalised density, also unshifted); P = weighted fraction of frames with "
                    "phi_range_deg[0] <= phi < phi_range_deg[1] and likewise psi (angles in [-180, 180)); stderr_kT and "
                    "probability_stderr from the block bootstrap of the surface (same blocks, replicates, seed)")


def register(subparsers) -> None:
    """Add the ``pmf`` sub-command."""
    p = subparsers.add_parser(
        "pmf", help="free-energy surface (PMF) of CVs along a trajectory",
        description="Histogram free energies in kT (−ln of the normalised density) with block-bootstrap "
        "errors: a 2-D surface for two CVs and 1-D PMFs per CV; for phi,psi also the Ramachandran basins' "
        "−ln P(basin). Writes pmf.json, pmf.npz, pmf.png.")
    p.add_argument("trajectory", type=Path,
                   help="a `boltzclf simulate` output directory, or a trajectory file mdtraj reads")
    p.add_argument("--system", type=Path, required=True, help="system spec YAML")
    p.add_argument("--cv", default="phi,psi",
                   help=f"one or two distinct comma-separated CV names (default phi,psi): {', '.join(CV_NAMES)} "
                   "(<k>, <i>, <j>: residue numbers)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--top", type=Path, default=None, help="topology file (default: the system's)")
    p.add_argument("--log-weights", type=Path, default=None, help=".npy of per-frame log-weights")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="K, for kT in pmf.json (default: md.temperature of a `boltzclf simulate` run "
                   "directory, else the system spec's)")
    p.add_argument("--bins", type=positive_int, default=36, help="bins per CV (36 = 10 degrees for angles)")
    p.add_argument("--blocks", type=positive_int, default=20, help="contiguous blocks for the bootstrap")
    p.add_argument("--bootstrap", type=positive_int, default=200, help="bootstrap replicates (at least 2)")
    p.add_argument("--seed", type=seed, default=0, help="bootstrap seed")
    p.set_defaults(handler=run)


def _cv_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not 1 <= len(names) <= 2:
        raise BoltzclfError(f"--cv {text}: give one or two CV names")
    if len(set(names)) < len(names):
        raise BoltzclfError(f"--cv {text}: {names[0]} is given twice; give two different CVs")
    return names


def _trajectory_files(path: Path, top: Path | None) -> tuple[Path, Path | None]:
    if path.is_dir():
        path = path / "trajectory.dcd"
        top = top or path.with_name("topology.pdb")
    if not path.is_file():
        raise BoltzclfError(f"{path}: trajectory not found")
    return path, top


def _temperature(traj_path: Path, requested: float | None, spec: Path, spec_temperature: float) -> tuple[float, str]:
    """Temperature [K] of the trajectory and where it came from: the ``config.json`` of the
    ``boltzclf simulate`` run whose ``trajectory.dcd`` it is, else ``--temperature``, else the spec."""
    config = traj_path.with_name("config.json")
    if traj_path.name == "trajectory.dcd" and config.is_file():
        try:
            record = json.loads(config.read_text())
        except json.JSONDecodeError:
            raise BoltzclfError(f"{config}: unreadable JSON") from None
        if record.get("command") == "simulate":
            try:
                temperature = float(record["md"]["temperature"])
            except (KeyError, TypeError, ValueError):
                raise BoltzclfError(f"{config}: no numeric md.temperature") from None
            if requested is not None and requested != temperature:
                raise BoltzclfError(f"--temperature {requested:g}: the trajectory was simulated at "
                                    f"{temperature:g} K ({config})")
            return temperature, f"{config} (md.temperature of the boltzclf simulate run)"
    if requested is not None:
        return requested, "--temperature"
    return spec_temperature, f"{spec} (system spec)"


def _log_weights(path: Path | None, n_frames: int) -> np.ndarray | None:
    if path is None:
        return None
    try:
        values = np.load(path)
    except Exception as exc:  # numpy raises OSError, ValueError, EOFError... for files it cannot read
        raise BoltzclfError(f"--log-weights {path}: cannot read ({one_line(exc) or type(exc).__name__})") from None
    if values.shape != (n_frames,):
        raise BoltzclfError(f"--log-weights {path}: expected shape ({n_frames},), got {values.shape}")
    return values


def _basins(values: np.ndarray, log_w: np.ndarray | None, args: argparse.Namespace) -> dict:
    """Ramachandran basins of ``values`` ``(N, 2)`` (φ, ψ) [rad] for pmf.json, boxes in degrees."""
    from boltzclf.estimators.pmf import basin_free_energies

    boxes = {name: [tuple(np.radians(r)) for r in box] for name, box in RAMACHANDRAN_BASINS.items()}
    wrapped = (values + np.pi) % (2 * np.pi) - np.pi
    estimates = basin_free_energies(wrapped, boxes, log_weights=log_w, n_blocks=args.blocks,
                                    n_bootstrap=args.bootstrap, seed=args.seed)
    return {name: {"phi_range_deg": list(box[0]), "psi_range_deg": list(box[1]), **estimates[name]}
            for name, box in RAMACHANDRAN_BASINS.items()}


def _basin_line(name: str, basin: dict) -> str:
    (p0, p1), (s0, s1) = basin["phi_range_deg"], basin["psi_range_deg"]
    where = f"{name:12s} phi [{p0:g}, {p1:g}) psi [{s0:g}, {s1:g}) deg:"
    if not basin["sampled"]:
        return f"{where} not sampled (no frames)"
    error = f"± {basin['stderr_kT']:.2f} kT" if basin["stderr_kT"] is not None else f"kT, {basin['note']}"
    return (f"{where} P = {basin['probability']:.3f} ± {basin['probability_stderr']:.3f}, "
            f"-ln P = {basin['free_energy_kT']:.2f} {error}")


def run(args: argparse.Namespace) -> int:
    import torch

    from boltzclf.energy.units import kt_kj_per_mol
    from boltzclf.estimators.pmf import histogram_free_energy
    from boltzclf.openmm import load_system
    from boltzclf.openmm.cvs import make_cv
    from boltzclf.plots.pmf import pmf_figure

    system = load_system(args.system)
    names = _cv_names(args.cv)
    try:
        cvs = [make_cv(n, system.mdtraj_topology, system.positions) for n in names]
    except BoltzclfError as exc:
        raise BoltzclfError(f"system {system.spec.name}: {exc}") from None
    traj_path, top = _trajectory_files(args.trajectory, args.top)
    temperature, temperature_source = _temperature(traj_path, args.temperature, args.system,
                                                   system.spec.temperature)
    frames = system.load_frames(traj_path, top)
    log_w = _log_weights(args.log_weights, len(frames))
    inputs = [p for p in (traj_path, top, args.system, args.log_weights) if p is not None]
    config = {"command": "pmf", "trajectory": str(traj_path.resolve()), "system": str(args.system.resolve()),
              "cv": names, "bins": args.bins, "blocks": args.blocks, "bootstrap": args.bootstrap,
              "seed": args.seed, "log_weights": str(args.log_weights) if args.log_weights else None,
              "temperature": temperature}
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
    kT = kt_kj_per_mol(temperature)
    results = {"n_frames": len(frames), "cv": [{"name": cv.name, "unit": cv.unit, "periodic": cv.periodic}
                                               for cv in cvs],
               "units": "kT; F = -ln(normalised density); CV values, edges and centres in each CV's unit "
                        "(angles in rad); basin boxes in degrees (keys *_deg)",
               "temperature_K": temperature, "temperature_source": temperature_source,
               "kT_kJ_per_mol": kT, "kT_kcal_per_mol": kT / 4.184,
               "profiles": {cv.name: p.to_dict() for cv, p in zip(cvs, profiles)}}
    if surface is not None:
        results["surface"] = surface.to_dict()
        if names == ["phi", "psi"]:
            results["basin_definition"] = BASIN_DEFINITION
            results["basins"] = _basins(values, log_w, args)
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
    if "basins" in results:
        print("Ramachandran basins: P = fraction of frames in the box; -ln P(basin) in kT, absolute:")
        for name, basin in results["basins"].items():
            print(_basin_line(name, basin))
    print(f"kT = {kT:.4f} kJ/mol at {temperature:g} K from {temperature_source}")
    print(f"wrote {out / 'pmf.json'}, pmf.npz, pmf.png ({len(frames)} frames)")
    return 0
