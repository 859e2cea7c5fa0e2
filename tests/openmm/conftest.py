"""Shared fixtures: the three shipped systems, loaded once per test session."""
from pathlib import Path

import pytest
from openmm_testdata import SYSTEM_NAMES, SYSTEMS_DIR

from boltzclf.openmm import load_system


@pytest.fixture(scope="session")
def systems():
    """name -> MolecularSystem with an in-process bridge."""
    loaded = {name: load_system(SYSTEMS_DIR / f"{name}.yaml") for name in SYSTEM_NAMES}
    yield loaded
    for system in loaded.values():
        system.close()


@pytest.fixture(scope="session")
def aldp_spec() -> Path:
    return SYSTEMS_DIR / "alanine_dipeptide_implicit.yaml"
