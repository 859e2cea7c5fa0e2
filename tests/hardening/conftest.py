"""Shared valid inputs of the hardening tests (:class:`fuzz_support.FuzzInputs`), built once per session
and only when first used: an openmmtools spec, a PDB spec (with its PDB), a 5-frame DCD, a 4-step trained
run and a 4-step ``compare_losses`` workflow run (a few seconds in all on 2 cores)."""
from __future__ import annotations

import pytest
from fuzz_support import FuzzInputs


@pytest.fixture(scope="session")
def fuzz_inputs(tmp_path_factory) -> FuzzInputs:
    return FuzzInputs(tmp_path_factory.mktemp("fuzz_inputs"))
