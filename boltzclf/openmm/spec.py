"""Declarative molecular system specs (``systems/*.yaml``) validated into frozen dataclasses.

Two kinds of spec exist, chosen by the top-level ``kind`` key:

``openmmtools``
    A named :mod:`openmmtools.testsystems` class (e.g. ``AlanineDipeptideImplicit``)::

        name: alanine_dipeptide_implicit
        kind: openmmtools
        temperature: 300.0          # K
        source:
          testsystem: AlanineDipeptideImplicit
          constraints: none         # none | HBonds | AllBonds | HAngles

``pdb``
    Any PDB file plus OpenMM force-field XML files, so a user adds a molecule without code::

        name: my_peptide
        kind: pdb
        temperature: 300.0
        source:
          pdb: my_peptide.pdb                       # relative to this YAML file
          forcefield: [amber14-all.xml, implicit/obc2.xml]
          constraints: none
          nonbonded_cutoff: null                    # nm; null = no cutoff

Force-field files are looked up next to the YAML file first, then among OpenMM's bundled files.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from boltzclf.core.config import from_mapping, load_yaml, require
from boltzclf.core.errors import ConfigError

Constraints = Literal["none", "HBonds", "AllBonds", "HAngles"]


@dataclass(frozen=True)
class OpenMMToolsSource:
    """An :mod:`openmmtools.testsystems` class built with the given constraints."""

    testsystem: str
    constraints: Constraints = "none"


@dataclass(frozen=True)
class PDBSource:
    """A PDB structure parametrised with OpenMM force-field XML files.

    ``pdb`` and ``forcefield`` hold resolved absolute paths after :func:`load_spec`.
    """

    pdb: str
    forcefield: tuple[str, ...]
    constraints: Constraints = "none"
    nonbonded_cutoff: Optional[float] = None

    def __post_init__(self) -> None:
        require(len(self.forcefield) > 0, "forcefield", "name at least one force-field XML file")
        require(self.nonbonded_cutoff is None or self.nonbonded_cutoff > 0,
                "nonbonded_cutoff", "must be positive (nm) or null")


_SOURCES = {"openmmtools": OpenMMToolsSource, "pdb": PDBSource}


@dataclass(frozen=True)
class SystemSpec:
    """A validated system spec.

    Attributes
    ----------
    name
        Identifier used in outputs.
    kind
        ``"openmmtools"`` or ``"pdb"``.
    temperature
        Temperature in K that defines kT for reduced energies.
    source
        :class:`OpenMMToolsSource` or :class:`PDBSource`.
    description
        Free text (provenance, choices made).
    path
        The YAML file the spec was read from (empty when built in code).
    """

    name: str
    kind: Literal["openmmtools", "pdb"]
    temperature: float
    source: Any
    description: str = ""
    path: str = ""

    def __post_init__(self) -> None:
        require(self.temperature > 0, "temperature", "must be positive (K)")
        require(bool(self.name), "name", "must not be empty")


def load_spec(path: str | os.PathLike) -> SystemSpec:
    """Read and validate a system spec YAML file.

    Raises
    ------
    ConfigError
        For malformed YAML, unknown or missing keys, bad values, a missing PDB or force-field file;
        the message names the file and the key.
    """
    path = Path(path)
    data = load_yaml(path)
    kind = data.get("kind")
    if kind not in _SOURCES:
        raise ConfigError(f"{path}: kind: {kind!r} is not one of {', '.join(map(repr, _SOURCES))}")
    if "path" in data:
        raise ConfigError(f"{path}: unknown key 'path'")
    source = from_mapping(_SOURCES[kind], data.get("source"), str(path), key="source")
    if isinstance(source, PDBSource):
        source = _resolve_files(source, path)
    spec = from_mapping(SystemSpec, {**data, "source": None, "path": str(path)}, str(path))
    return dataclasses.replace(spec, source=source, path=str(path.resolve()))


def _resolve_files(source: PDBSource, spec_path: Path) -> PDBSource:
    base = spec_path.resolve().parent
    pdb = base / source.pdb
    if not pdb.is_file():
        raise ConfigError(f"{spec_path}: source.pdb: file {str(pdb)!r} not found")
    forcefield = tuple(_find_forcefield(name, base, spec_path) for name in source.forcefield)
    return dataclasses.replace(source, pdb=str(pdb), forcefield=forcefield)


def _find_forcefield(name: str, base: Path, spec_path: Path) -> str:
    """A force-field file next to the spec, else one bundled with OpenMM."""
    local = base / name
    if local.is_file():
        return str(local)
    import openmm.app

    bundled = Path(openmm.app.__file__).parent / "data" / name
    if bundled.is_file():
        return str(bundled)
    raise ConfigError(
        f"{spec_path}: source.forcefield: file {name!r} not found next to the spec nor among "
        "OpenMM's bundled force fields"
    )
