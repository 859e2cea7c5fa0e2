"""``boltzclf pmf`` (issue 13): undefined and duplicate CVs are refused, Ramachandran basins are disjoint
and report −ln P(basin), kT is that of the trajectory's temperature, short runs print no NaN.

Frames are alanine dipeptide with φ/ψ set exactly by rigid rotations about the N–Cα and Cα–C bonds
(checked with mdtraj), so basin populations are known by construction.
"""
import json
import warnings
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from boltzclf.cli.main import main
from boltzclf.cli.pmf import RAMACHANDRAN_BASINS
from boltzclf.estimators.pmf import basin_free_energies
from boltzclf.openmm import load_system

SPEC = Path(__file__).resolve().parents[1] / "systems" / "alanine_dipeptide_vacuum.yaml"
R = 0.00831446261815324  # kJ/(mol K)


def rotate_side(x, bonds, axis_from, axis_to, angle):
    """``x`` ``(n, 3)`` with the atoms on ``axis_to``'s side of bond (axis_from, axis_to) rotated by
    ``angle`` [rad] about that bond (Rodrigues)."""
    neighbours = {i: set() for i in range(len(x))}
    for a, b in bonds:
        if {a, b} != {axis_from, axis_to}:
            neighbours[a].add(b)
            neighbours[b].add(a)
    side, stack = {axis_to}, [axis_to]
    while stack:
        for j in neighbours[stack.pop()] - side:
            side.add(j)
            stack.append(j)
    assert axis_from not in side  # a ring would make the rotation non-rigid
    k = (x[axis_to] - x[axis_from]) / np.linalg.norm(x[axis_to] - x[axis_from])
    v = x[sorted(side)] - x[axis_to]
    rotated = (v * np.cos(angle) + np.cross(k, v) * np.sin(angle) + np.outer(v @ k, k) * (1 - np.cos(angle)))
    x = x.copy()
    x[sorted(side)] = rotated + x[axis_to]
    return x


def aldp_frames(angles_deg):
    """ALDP frames ``(F, 22, 3)`` [nm] with (φ, ψ) = ``angles_deg`` ``(F, 2)`` exactly."""
    system = load_system(SPEC)
    top = system.mdtraj_topology
    bonds = [(b[0].index, b[1].index) for b in top.bonds]
    ref = mdtraj.Trajectory(system.positions[None], top)
    (phi_q,), phi0 = mdtraj.compute_phi(ref)
    (psi_q,), psi0 = mdtraj.compute_psi(ref)
    frames = []
    for phi, psi in np.radians(angles_deg):
        x = rotate_side(system.positions, bonds, phi_q[1], phi_q[2], phi - phi0[0, 0])
        frames.append(rotate_side(x, bonds, psi_q[1], psi_q[2], psi - psi0[0, 0]))
    traj = mdtraj.Trajectory(np.array(frames), top)
    got = np.degrees(np.column_stack([mdtraj.compute_phi(traj)[1][:, 0], mdtraj.compute_psi(traj)[1][:, 0]]))
    assert np.allclose((got - angles_deg + 180) % 360 - 180, 0, atol=1e-3)  # mdtraj works in float32
    return traj


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """100 frames: 58 in C5, 40 in C7eq, 2 (adjacent) in alphaR; PII and alphaL_C7ax empty."""
    angles = np.array([(-150.0, 150.0)] * 58 + [(-80.0, 70.0)] * 40 + [(-70.0, -40.0)] * 2)
    angles[:, 0] += np.linspace(-5, 5, 100)  # not all identical; stays > 1 degree inside the boxes
    directory = tmp_path_factory.mktemp("short")
    traj = aldp_frames(angles)
    traj.save_dcd(str(directory / "trajectory.dcd"))
    traj[0].save_pdb(str(directory / "topology.pdb"))
    return directory


def pmf(trajectory, out, *extra):
    return main(["pmf", str(trajectory), "--system", str(SPEC), "--out", str(out), "--bins", "12",
                 "--blocks", "10", "--bootstrap", "50", *extra])


def test_end_to_end_on_a_one_residue_molecule_exits_2_before_writing(short_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert pmf(short_run, out, "--cv", "end_to_end") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "end_to_end" in err and "alanine_dipeptide_vacuum" in err and "ACE1-ALA2-NME3" in err
    assert not out.exists()


def test_duplicate_cv_names_exit_2(short_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert pmf(short_run, out, "--cv", "phi,phi") == 2
    assert "phi is given twice" in capsys.readouterr().err
    assert not out.exists()


def test_ramachandran_boxes_are_disjoint_half_open_intervals():
    names = list(RAMACHANDRAN_BASINS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            separated = [hi_a <= lo_b or hi_b <= lo_a
                         for (lo_a, hi_a), (lo_b, hi_b) in zip(RAMACHANDRAN_BASINS[a], RAMACHANDRAN_BASINS[b])]
            assert any(separated), (a, b)


def test_no_bin_centre_or_box_edge_is_counted_in_two_basins():
    """Points on a grid holding every 10-degree bin centre and every box edge (the old inclusive boxes
    put ψ = 115° in both PII and C7eq): the basin probabilities add up to the fraction of points in
    the union of the half-open boxes [low, high), counted here independently."""
    edges = {v for box in RAMACHANDRAN_BASINS.values() for r in box for v in r}
    axis = np.array(sorted(set(np.arange(-175.0, 180.0, 10.0)) | edges - {180.0}))
    phi, psi = (g.ravel() for g in np.meshgrid(axis, axis, indexing="ij"))
    boxes = {k: [tuple(np.radians(r)) for r in v] for k, v in RAMACHANDRAN_BASINS.items()}
    basins = basin_free_energies(np.radians(np.column_stack([phi, psi])), boxes, n_blocks=2, n_bootstrap=2)
    in_union = np.zeros(phi.size, bool)
    for (p0, p1), (s0, s1) in RAMACHANDRAN_BASINS.values():
        in_union |= (p0 <= phi) & (phi < p1) & (s0 <= psi) & (psi < s1)
    assert sum(b["probability"] for b in basins.values()) == pytest.approx(in_union.mean(), abs=1e-12)
    one = basin_free_energies(np.radians([[-80.0, 115.0], [-80.0, 115.0]]), boxes, n_blocks=2, n_bootstrap=2)
    assert one["PII"]["probability"] == 1.0 and one["C7eq"]["probability"] == 0.0


def test_short_run_reports_minus_ln_p_and_not_sampled_basins_without_nan(short_run, tmp_path, capsys):
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert pmf(short_run, out, "--blocks", "20", "--bootstrap", "200") == 0
    printed = capsys.readouterr().out
    assert "nan" not in printed.lower()
    basins = json.loads((out / "pmf.json").read_text())["basins"]
    for name, fraction in [("C5", 0.58), ("C7eq", 0.40), ("alphaR", 0.02)]:
        assert basins[name]["probability"] == pytest.approx(fraction, abs=1e-12)
        assert basins[name]["free_energy_kT"] == pytest.approx(-np.log(fraction), abs=1e-12)
    assert basins["C5"]["stderr_kT"] > 0
    # 2 adjacent frames: one block of 20, absent from most bootstrap replicates -> no error bar
    assert basins["alphaR"]["stderr_kT"] is None and "bootstrap" in basins["alphaR"]["note"]
    alpha_r = next(line for line in printed.splitlines() if line.startswith("alphaR"))
    assert "n/a" in alpha_r and "empty in" in alpha_r
    for name in ("PII", "alphaL_C7ax"):
        assert basins[name]["sampled"] is False and basins[name]["free_energy_kT"] is None
        assert "not sampled" in next(line for line in printed.splitlines() if line.startswith(name))
    # one angle unit per quantity: boxes in degrees in both pmf.json and the printout
    assert basins["C5"]["phi_range_deg"] == [-180.0, -115.0]
    assert "phi [-180, -115) psi [115, 180) deg" in printed


def test_help_lists_the_cv_names(capsys):
    with pytest.raises(SystemExit):
        main(["pmf", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("phi", "psi", "phi<k>", "psi<k>", "rmsd_ca", "q_native", "end_to_end", "hb_N<i>_O<j>"):
        assert name in text


@pytest.fixture(scope="module")
def run_350(tmp_path_factory):
    """A real 40-frame `boltzclf simulate` run of ALDP at 350 K (the spec says 300 K)."""
    out = tmp_path_factory.mktemp("sim") / "run"
    assert main(["simulate", str(SPEC), "--out", str(out), "--ns", "0.004", "--temperature", "350",
                 "--equilibration-ps", "0", "--threads", "1", "--no-progress"]) == 0
    return out


def test_kt_is_that_of_the_run_directory_temperature(run_350, tmp_path, capsys):
    assert pmf(run_350, tmp_path / "out", "--blocks", "4") == 0
    result = json.loads((tmp_path / "out" / "pmf.json").read_text())
    assert result["temperature_K"] == 350.0 and "config.json" in result["temperature_source"]
    assert result["kT_kJ_per_mol"] == pytest.approx(R * 350.0, rel=1e-12)
    assert pmf(run_350, tmp_path / "other", "--blocks", "4", "--temperature", "300") == 2
    assert "simulated at 350 K" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_kt_of_a_plain_trajectory_file_follows_temperature_option_else_the_spec(short_run, tmp_path):
    dcd = short_run / "trajectory.dcd"
    for extra, temperature in [((), 300.0), (("--temperature", "310"), 310.0)]:
        out = tmp_path / f"out{temperature:g}"
        assert pmf(dcd, out, "--top", str(short_run / "topology.pdb"), *extra) == 0
        result = json.loads((out / "pmf.json").read_text())
        assert result["temperature_K"] == temperature
        assert result["kT_kJ_per_mol"] == pytest.approx(R * temperature, rel=1e-12)
