"""Paths and names of the shipped systems, shared by the tests in this directory."""
from pathlib import Path

SYSTEMS_DIR = Path(__file__).resolve().parents[2] / "systems"
SYSTEM_NAMES = ("alanine_dipeptide_vacuum", "alanine_dipeptide_implicit", "chignolin_implicit")
