"""System specs: the shipped ones load; every kind of bad input names its culprit."""
import shutil
from pathlib import Path

import numpy as np
import openmm.unit as unit
import pytest
from openmm_testdata import SYSTEMS_DIR

from boltzclf.core.errors import BoltzclfError, ConfigError
from boltzclf.openmm import load_system
from boltzclf.openmm.spec import PDBSource, load_spec

PDB_SPEC = """\
name: test
kind: pdb
temperature: 300.0
source:
  pdb: {pdb}
  forcefield: {forcefield}
"""


def write_spec(tmp_path, pdb="mol.pdb", forcefield="[amber14-all.xml, implicit/obc2.xml]", text=None):
    path = tmp_path / "spec.yaml"
    path.write_text(text if text is not None else PDB_SPEC.format(pdb=pdb, forcefield=forcefield))
    return path


def edited_chignolin_pdb(tmp_path, old, new):
    """The shipped chignolin PDB with every ``old`` replaced by ``new`` (which must occur)."""
    text = (SYSTEMS_DIR / "chignolin_cln025.pdb").read_text()
    assert old in text
    (tmp_path / "mol.pdb").write_text(text.replace(old, new))


def test_pdb_spec_resolves_local_and_bundled_files(tmp_path):
    shutil.copy(SYSTEMS_DIR / "chignolin_cln025.pdb", tmp_path / "mol.pdb")
    spec = load_spec(write_spec(tmp_path))
    assert isinstance(spec.source, PDBSource)
    assert spec.source.pdb == str(tmp_path / "mol.pdb")
    assert spec.source.forcefield[1].endswith("implicit/obc2.xml")
    assert load_system(spec.path).n_atoms == 166


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write_spec(tmp_path, text="name: x\nkind: [pdb\n")
    with pytest.raises(ConfigError, match=r"spec.yaml: malformed YAML \(line"):
        load_spec(path)


def test_unknown_key_names_key_and_file(tmp_path):
    text = (SYSTEMS_DIR / "alanine_dipeptide_vacuum.yaml").read_text() + "temprature: 310\n"
    with pytest.raises(ConfigError, match=r"spec.yaml: unknown key\(s\) 'temprature'"):
        load_spec(write_spec(tmp_path, text=text))


def test_unknown_source_key_names_key(tmp_path):
    text = (SYSTEMS_DIR / "alanine_dipeptide_vacuum.yaml").read_text() + "  cutoff: 1.0\n"
    with pytest.raises(ConfigError, match=r"spec.yaml: source: unknown key\(s\) 'cutoff'"):
        load_spec(write_spec(tmp_path, text=text))


def test_unknown_kind(tmp_path):
    with pytest.raises(ConfigError, match=r"kind: 'gro' is not one of"):
        load_spec(write_spec(tmp_path, text="name: x\nkind: gro\ntemperature: 300\nsource: {}\n"))


def test_unknown_testsystem(tmp_path):
    text = (SYSTEMS_DIR / "alanine_dipeptide_vacuum.yaml").read_text().replace(
        "AlanineDipeptideVacuum", "AlanineTripeptide")
    with pytest.raises(BoltzclfError, match="'AlanineTripeptide' is not an openmmtools test system"):
        load_system(write_spec(tmp_path, text=text))


def test_missing_forcefield_file_is_named(tmp_path):
    shutil.copy(SYSTEMS_DIR / "chignolin_cln025.pdb", tmp_path / "mol.pdb")
    with pytest.raises(ConfigError, match=r"source.forcefield: file 'amber99nope.xml' not found"):
        load_spec(write_spec(tmp_path, forcefield="[amber99nope.xml]"))


def test_missing_pdb_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"source.pdb: file .*missing.pdb.* not found"):
        load_spec(write_spec(tmp_path, pdb="missing.pdb"))


def test_unknown_residue_is_named(tmp_path):
    edited_chignolin_pdb(tmp_path, "PRO A   4", "XYZ A   4")
    with pytest.raises(BoltzclfError, match=r"mol.pdb: no template .* for residue\(s\).*XYZ4 \(chain A\)"):
        load_system(write_spec(tmp_path))


def test_unknown_atom_is_named(tmp_path):
    edited_chignolin_pdb(tmp_path, " CB  ASP A   3", " CQ  ASP A   3")
    with pytest.raises(BoltzclfError, match=r"mol.pdb: no template .* for residue\(s\) ASP3 \(chain A\)"):
        load_system(write_spec(tmp_path))


def test_nonpositive_temperature(tmp_path):
    text = (SYSTEMS_DIR / "alanine_dipeptide_vacuum.yaml").read_text().replace("300.0", "-1.0")
    with pytest.raises(ConfigError, match="temperature: must be positive"):
        load_spec(write_spec(tmp_path, text=text))


def test_per_atom_metadata_matches_the_openmm_system(systems):
    system = systems["alanine_dipeptide_implicit"]
    assert system.event_shape == (22, 3) and system.positions.shape == (22, 3)
    assert system.elements.count("H") == 12 and system.elements.count("C") == 6
    masses = [system.system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(22)]
    np.testing.assert_array_equal(system.masses, masses)
    assert system.bonds.shape == (21, 2)  # a tree: 22 atoms, no rings
    assert {tuple(sorted(b)) for b in system.bonds.tolist()} == {
        tuple(sorted((b.atom1.index, b.atom2.index))) for b in system.mdtraj_topology.bonds}
    assert system.kT == pytest.approx(unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
        unit.kilojoule_per_mole / unit.kelvin) * 300.0)


def test_forcefield_next_to_the_spec_is_preferred(tmp_path):
    shutil.copy(SYSTEMS_DIR / "chignolin_cln025.pdb", tmp_path / "mol.pdb")
    import openmm.app

    bundled = Path(openmm.app.__file__).parent / "data" / "amber14" / "protein.ff14SB.xml"
    shutil.copy(bundled, tmp_path / "my_ff.xml")
    spec = load_spec(write_spec(tmp_path, forcefield="[my_ff.xml, amber14/tip3p.xml]"))
    assert spec.source.forcefield[0] == str(tmp_path / "my_ff.xml")


@pytest.mark.parametrize("pdb", ["../outside/mol.pdb", "{abs}"], ids=["dot-dot", "absolute"])
def test_a_pdb_outside_the_spec_folder_is_refused_unless_its_folder_is_named(tmp_path, monkeypatch, pdb):
    outside, spec_dir = tmp_path / "outside", tmp_path / "specs"
    outside.mkdir()
    spec_dir.mkdir()
    shutil.copy(SYSTEMS_DIR / "chignolin_cln025.pdb", outside / "mol.pdb")
    spec = write_spec(spec_dir, pdb=pdb.format(abs=outside / "mol.pdb"))
    monkeypatch.delenv("BOLTZCLF_DATA_PATH", raising=False)
    with pytest.raises(ConfigError, match=r"source.pdb: .*mol.pdb' lies outside the spec's folder"):
        load_spec(spec)
    assert load_spec(spec, data_paths=(outside,)).source.pdb.endswith("mol.pdb")
    monkeypatch.setenv("BOLTZCLF_DATA_PATH", str(outside))
    assert load_spec(spec).source.pdb.endswith("mol.pdb")


def test_a_local_forcefield_outside_the_spec_folder_is_refused(tmp_path):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    shutil.copy(SYSTEMS_DIR / "chignolin_cln025.pdb", spec_dir / "mol.pdb")
    (tmp_path / "ff.xml").write_text("<ForceField/>")
    with pytest.raises(ConfigError, match=r"source.forcefield: '../ff.xml' lies outside"):
        load_spec(write_spec(spec_dir, forcefield="[../ff.xml]"))


def test_a_nan_coordinate_is_refused_naming_the_atom(tmp_path):
    edited_chignolin_pdb(tmp_path, "ATOM      5  CA  TYR A   1       0.767", "ATOM      5  CA  TYR A   1         nan")
    with pytest.raises(BoltzclfError, match=r"mol.pdb: non-finite coordinate for atom CA \(index 4\) of residue TYR1"):
        load_system(write_spec(tmp_path))


def test_a_test_system_without_atoms_is_refused(tmp_path):
    text = "name: x\nkind: openmmtools\ntemperature: 300\nsource:\n  testsystem: TestSystem\n"
    with pytest.raises(BoltzclfError, match=r"spec.yaml: source.testsystem: the system has no atoms"):
        load_system(write_spec(tmp_path, text=text))
