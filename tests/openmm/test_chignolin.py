"""The shipped CLN025 structure: regenerated offline by its documented command, and a folded hairpin."""

import mdtraj
import numpy as np
import pytest
import torch
from openmm_testdata import SYSTEMS_DIR

from boltzclf.cli.main import main
from boltzclf.openmm import build_chignolin
from boltzclf.openmm.cvs import make_cv

PDB = SYSTEMS_DIR / "chignolin_cln025.pdb"


def test_shipped_pdb_is_the_sequence_with_register_hydrogen_bonds(systems):
    system = systems["chignolin_implicit"]
    residues = "".join(r.code for r in system.mdtraj_topology.residues)
    assert residues == build_chignolin.SEQUENCE
    x = torch.from_numpy(system.positions[None])
    # Asp3 N···Thr8 O within hydrogen-bond range; Tyr1–Tyr10 Cα close (an extended chain: ~3 nm)
    for name, limit in (("hb_N3_O8", 0.35), ("end_to_end", 0.6)):
        assert make_cv(name, system.mdtraj_topology, system.positions)(x).item() < limit


@pytest.mark.slow  # ~1 min: includes 20 ps of restrained relaxation dynamics
def test_regeneration_command_reproduces_the_shipped_structure(tmp_path):
    out = tmp_path / "cln025.pdb"
    build_chignolin.main(["--out", str(out)])
    built, shipped = mdtraj.load(str(out)), mdtraj.load(str(PDB))
    assert [a.name for a in built.topology.atoms] == [a.name for a in shipped.topology.atoms]
    # the minimisations agree to thread-order round-off only; 0.01 nm is far below any real change
    assert mdtraj.rmsd(built, shipped)[0] < 0.01


@pytest.mark.slow
def test_short_md_from_the_built_hairpin_stays_folded(tmp_path):
    out = tmp_path / "md"
    assert main(["simulate", str(SYSTEMS_DIR / "chignolin_implicit.yaml"), "--out", str(out), "--ns", "0.05",
                 "--stride-ps", "1", "--no-progress"]) == 0
    traj = mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
    ca = traj.topology.select("name CA")
    rmsd = mdtraj.rmsd(traj, mdtraj.load(str(PDB)), atom_indices=ca)
    assert np.median(rmsd) < 0.2  # nm; an unfolded CLN025 is at > 0.4 nm
