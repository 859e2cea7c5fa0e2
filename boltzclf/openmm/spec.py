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
Files a spec names must lie inside the spec's folder (or its subfolders) or inside a data folder the
user names explicitly (``data_paths`` of :func:`load_spec`, or the ``BOLTZCLF_DATA_PATH``
environment variable, folders separated by ``os.pathsep``): a ``../`` or absolute path that leaves
them is refused, so a spec cannot make boltzclf read arbitrary files.
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


DATA_PATH_VARIABLE = "BOLTZCLF_DATA_PATH"


def load_spec(path: str | os.PathLike, data_paths: tuple[str | os.PathLike, ...] = ()) -> SystemSpec:
    """Read and validate a system spec YAML file.

    ``data_paths`` are folders, besides the spec's own, from which the spec may read files (the
    folders in ``$BOLTZCLF_DATA_PATH`` are added).

    Raises
    ------
    ConfigError
        For malformed YAML, unknown or missing keys, bad values, a missing PDB or force-field file,
        or a file outside the allowed folders; the message names the file and the key.
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
        source = _resolve_files(source, path, _allowed_folders(path, data_paths))
    spec = from_mapping(SystemSpec, {**data, "source": None, "path": str(path)}, str(path))
    return dataclasses.replace(spec, source=source, path=str(path.resolve()))


def _allowed_folders(spec_path: Path, data_paths) -> tuple[Path, ...]:
    """The spec's folder, the given data folders and those of ``$BOLTZCLF_DATA_PATH``, resolved."""
    extra = [p for p in os.environ.get(DATA_PATH_VARIABLE, "").split(os.pathsep) if p]
    return tuple(Path(p).resolve() for p in (spec_path.resolve().parent, *data_paths, *extra))


def _inside(path: Path, folders: tuple[Path, ...]) -> bool:
    """Whether ``path`` (symbolic links and ``..`` resolved) lies in one of ``folders``."""
    return any(path.resolve().is_relative_to(folder) for folder in folders)


def _outside(spec_path: Path, key: str, name: str, base: Path) -> str:
    return (f"{spec_path}: {key}: {name!r} lies outside the spec's folder {str(base)!r}; move it there "
            f"or name its folder in ${DATA_PATH_VARIABLE}")


def _resolve_files(source: PDBSource, spec_path: Path, allowed: tuple[Path, ...]) -> PDBSource:
    base = allowed[0]
    pdb = base / source.pdb
    if not _inside(pdb, allowed):
        raise ConfigError(_outside(spec_path, "source.pdb", source.pdb, base))
    if not pdb.is_file():
        raise ConfigError(f"{spec_path}: source.pdb: file {str(pdb)!r} not found")
    forcefield = tuple(_find_forcefield(name, allowed, spec_path) for name in source.forcefield)
    return dataclasses.replace(source, pdb=str(pdb), forcefield=forcefield)


def _find_forcefield(name: str, allowed: tuple[Path, ...], spec_path: Path) -> str:
    """A force-field file next to the spec, else one bundled with OpenMM (inside their folders)."""
    local = allowed[0] / name
    if local.is_file():
        if not _inside(local, allowed):
            raise ConfigError(_outside(spec_path, "source.forcefield", name, allowed[0]))
        return str(local)
    import openmm.app

    bundled_folder = Path(openmm.app.__file__).parent / "data"
    bundled = bundled_folder / name
    if bundled.is_file() and _inside(bundled, (bundled_folder.resolve(),)):
        return str(bundled)
    raise ConfigError(
        f"{spec_path}: source.forcefield: file {name!r} not found next to the spec nor among "
        "OpenMM's bundled force fields"
    )
