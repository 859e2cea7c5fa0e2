"""The Python API for molecules: :func:`load_system` returns a :class:`MolecularSystem`."""
from __future__ import annotations

import os
from functools import cached_property

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import torch

from boltzclf.core.errors import BoltzclfError, one_line
from boltzclf.energy.bridge import Bridge, make_bridge
from boltzclf.energy.units import kt_kj_per_mol
from boltzclf.openmm.builders import build
from boltzclf.openmm.spec import SystemSpec, load_spec


class MolecularSystem:
    """An OpenMM system with reduced-unit energies; satisfies the :class:`EnergyTarget` protocol.

    Attributes
    ----------
    spec
        The validated spec it was built from.
    system, topology
        The OpenMM ``System`` and ``app.Topology``.
    positions
        Reference positions ``(n_atoms, 3)`` in nm, float64.
    temperature, kT
        K and kJ/mol.
    """

    def __init__(self, spec: SystemSpec, system: openmm.System, topology: app.Topology,
                 positions: np.ndarray, bridge_options: dict | None = None) -> None:
        self.spec = spec
        self.system = system
        self.topology = topology
        self.positions = positions
        self.temperature = spec.temperature
        self.kT = kt_kj_per_mol(spec.temperature)
        self.event_shape = (system.getNumParticles(), 3)
        self._bridge_options = bridge_options or {}
        self._bridge: Bridge | None = None

    @property
    def n_atoms(self) -> int:
        return self.event_shape[0]

    @cached_property
    def mdtraj_topology(self) -> mdtraj.Topology:
        return mdtraj.Topology.from_openmm(self.topology)

    @cached_property
    def elements(self) -> tuple[str, ...]:
        """Element symbol of each atom."""
        return tuple(atom.element.symbol for atom in self.topology.atoms())

    @cached_property
    def atomic_numbers(self) -> np.ndarray:
        """``(n_atoms,)`` int."""
        return np.array([atom.element.atomic_number for atom in self.topology.atoms()])

    @cached_property
    def masses(self) -> np.ndarray:
        """``(n_atoms,)`` in amu (Da), as the OpenMM system holds them."""
        return np.array([self.system.getParticleMass(i)._value for i in range(self.n_atoms)])

    @cached_property
    def bonds(self) -> np.ndarray:
        """``(n_bonds, 2)`` int atom indices of the covalent bonds in the topology."""
        return np.array([[a.index, b.index] for a, b in self.topology.bonds()], dtype=np.int64)

    def refuse_constraints(self, consumer: str) -> None:
        """Raise when the system has constraints, which ``consumer`` would ignore.

        With constraints the sampled density is not ``exp(-u(x))`` over Cartesian coordinates, so
        an energy target, reweighting or unconstrained dynamics of it would be silently wrong.

        Raises
        ------
        BoltzclfError
            Naming the spec, the number of constraints and the consumer.
        """
        n = self.system.getNumConstraints()
        if n > 0:
            raise BoltzclfError(
                f"{self.spec.path or self.spec.name}: has {n} constraints ({self.spec.source.constraints}), "
                f"which {consumer} would ignore: the Boltzmann density exp(-u(x)) over Cartesian coordinates "
                "is not the constrained ensemble; use 'constraints: none' in the spec (and a 1 fs time step)")

    @property
    def bridge(self) -> Bridge:
        """The energy bridge, created on first use with the options given to :func:`load_system`.

        Refused for constrained systems (see :meth:`refuse_constraints`).
        """
        if self._bridge is None:
            self.refuse_constraints("an energy target (reweighting, SMC, Langevin)")
            self._bridge = make_bridge(self, **self._bridge_options)
        return self._bridge

    def load_frames(self, path: str | os.PathLike, top: str | os.PathLike | None = None) -> np.ndarray:
        """Frames ``(F, n_atoms, 3)`` [nm, float64] of a trajectory file mdtraj reads.

        ``top`` is a topology file; by default the system's own topology is used (DCD, XTC...).

        Raises
        ------
        BoltzclfError
            If the file is missing, unreadable or cut short (a DCD holding fewer whole frames than
            its header counts), its atom count differs from the system's (both named), or a frame
            holds a non-finite coordinate (the first such frame and atom named).
        """
        if not os.path.exists(path):
            raise BoltzclfError(f"{path}: trajectory not found")
        n_atoms = _atoms_in_file(path)
        if n_atoms is not None and n_atoms != self.n_atoms:
            raise BoltzclfError(f"{path}: has {n_atoms} atoms, system {self.spec.name} has {self.n_atoms}")
        try:
            traj = mdtraj.load(str(path), top=str(top) if top else self.mdtraj_topology)
        except Exception as exc:  # mdtraj raises many types for unreadable or mismatched files
            raise BoltzclfError(f"{path}: cannot read trajectory ({one_line(exc)})") from None
        if traj.n_atoms != self.n_atoms:
            raise BoltzclfError(f"{path}: has {traj.n_atoms} atoms, system {self.spec.name} has {self.n_atoms}")
        _check_dcd_length(path, traj.n_frames)
        bad = np.argwhere(~np.isfinite(traj.xyz).all(axis=2))
        if len(bad):
            raise BoltzclfError(f"{path}: frame {bad[0][0]} has a non-finite coordinate (atom {bad[0][1]}); "
                                f"{len(np.unique(bad[:, 0]))} frame(s) in all")
        return traj.xyz.astype(np.float64)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Reduced energy ``(B,)`` [kT] of ``x`` ``(B, n_atoms, 3)`` [nm]; differentiable."""
        return self.bridge.energy(x)

    def force(self, x: torch.Tensor) -> torch.Tensor:
        """``-∇u`` ``(B, n_atoms, 3)`` [kT/nm]."""
        return self.bridge.force(x)

    def close(self) -> None:
        """Stop the bridge's worker processes, if any."""
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None

    def __enter__(self) -> "MolecularSystem":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _atoms_in_file(path: str | os.PathLike) -> int | None:
    """Atoms per frame of a trajectory file, read without a topology (None when mdtraj cannot tell)."""
    try:
        with mdtraj.open(str(path)) as handle:
            return int(handle.read(n_frames=1)[0].shape[1])
    except Exception:  # formats without a topology-free reader, or unreadable files: load() reports
        return None


def _check_dcd_length(path: str | os.PathLike, n_read: int) -> None:
    """Refuse a DCD whose header counts more frames than the file holds whole (a cut-short copy)."""
    if not str(path).lower().endswith(".dcd"):
        return
    with open(path, "rb") as handle:
        header = handle.read(12)
    counted = int(np.frombuffer(header[8:12], dtype="<i4")[0]) if header[4:8] == b"CORD" else 0
    if counted > n_read:
        raise BoltzclfError(f"{path}: its header counts {counted} frames but the file holds {n_read} whole "
                            "frames: it was cut short")


def load_system(path: str | os.PathLike, *, backend: str = "openmm", **bridge_options) -> MolecularSystem:
    """Load a system spec YAML and build it.

    Parameters
    ----------
    path
        A ``systems/*.yaml`` spec.
    backend
        Energy backend for :meth:`MolecularSystem.energy`: ``"openmm"`` (worker pool of Contexts) or
        ``"torch"`` (:mod:`boltzclf.forcefield`; options ``device``, ``dtype``, ``chunk_size``,
        ``compiled``). For native torch evaluation (CUDA tensors, autograd graph kept) use
        :func:`boltzclf.forcefield.torch_target`.
    **bridge_options
        Passed to the backend, e.g. ``workers=2``, ``policy=EnergyPolicy("cap")``.

    Raises
    ------
    BoltzclfError
        For any problem with the spec, the PDB or the force-field files.
    """
    spec = load_spec(path)
    built = build(spec)
    return MolecularSystem(spec, built.system, built.topology, built.positions,
                           {"backend": backend, **bridge_options})
