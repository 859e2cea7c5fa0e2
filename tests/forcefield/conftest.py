"""Session fixtures of the torch force-field tests (helpers live in ``forcefield_testdata.py``)."""
from __future__ import annotations

import pytest

from forcefield_testdata import Molecule, openmmtools_system, project_system


@pytest.fixture(scope="session")
def aldp_vacuum() -> Molecule:
    return openmmtools_system("AlanineDipeptideVacuum")


@pytest.fixture(scope="session")
def aldp_implicit() -> Molecule:
    return openmmtools_system("AlanineDipeptideImplicit")


@pytest.fixture(scope="session")
def chignolin() -> Molecule:
    """The project's chignolin (CLN025, amber14 + OBC2 CustomGBForce, 166 atoms)."""
    return project_system("chignolin_implicit")
