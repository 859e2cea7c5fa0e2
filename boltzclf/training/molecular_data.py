"""Training data from molecular trajectories: centred Cartesian frames in nm, split, σ_d, rotations.

A dataset is a trajectory and the system spec it was run with. The trajectory is either a run
directory of ``boltzclf simulate --engine torch`` / the ``reference_ensemble`` workflow (its
target-temperature frames; each walker column is an independent chain, so the validation set is
whole columns) or any file mdtraj reads (the validation set is then the last frames). Frames are
centred on their centre of geometry, the gauge :class:`~boltzclf.models.EnergyModel` uses for
particles, and optionally restricted to a subset of atoms (a coarse-grained model: e.g. the ALDP
backbone heavy atoms 4, 6, 8, 14, 16).

σ_d, the per-degree-of-freedom spread the model's preconditioning needs, is
σ_d² = E‖x_c‖² / (3(n − 1)) over the training frames (x_c centred, n atoms).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from boltzclf.core.config import added_setting, require
from boltzclf.core.errors import BoltzclfError
from boltzclf.dynamics.output import load_frames
from boltzclf.models.pairwise import pair_statistics
from boltzclf.openmm.cvs import kabsch_align
from boltzclf.training.equivalent_atoms import AtomPermutations


@dataclass(frozen=True)
class MolecularDataConfig:
    """A molecular training set.

    system: spec YAML (``systems/*.yaml``) the trajectory was run with. trajectory: a run directory of
    batched dynamics (``DIR/dynamics`` of a ``reference_ensemble`` run or ``DIR`` of ``simulate``) or a
    trajectory file mdtraj reads (with ``topology`` for formats that carry none; default: the system's).
    atoms: keep only these atom indices (coarse-grained; default all). stride: keep every stride-th
    frame. validation_fraction: share of walker columns (run directories) or of the final frames (files)
    held out. align: Kabsch-superpose every frame on the first (the model is rotation invariant, so
    this only matters for non-invariant networks). rotations: random rotation of each training batch.
    permute_equivalent: relabel every group of equivalent atoms (e.g. a methyl's hydrogens) at random
    in each training batch (:mod:`boltzclf.training.equivalent_atoms`).
    sigma_data: σ_d in nm; null computes it from the training frames (and the run stores the value).
    A workflow that makes its own reference ensemble fills in ``trajectory``; ``boltzclf train`` needs it.
    """

    system: str
    trajectory: str | None = None
    topology: str | None = None
    atoms: tuple[int, ...] | None = None
    stride: int = 1
    validation_fraction: float = 0.1
    align: bool = False
    rotations: bool = False
    sigma_data: float | None = None
    permute_equivalent: bool = added_setting(False)

    def __post_init__(self):
        require(self.stride >= 1, "stride", f"must be >= 1, got {self.stride}")
        require(0.0 <= self.validation_fraction < 1.0, "validation_fraction",
                f"must be in [0, 1), got {self.validation_fraction}")
        require(self.sigma_data is None or self.sigma_data > 0, "sigma_data", "must be positive")
        require(not (self.permute_equivalent and self.atoms is not None), "permute_equivalent",
                "relabels equivalent atoms of the whole molecule; not with a subset of atoms")
        if self.atoms is not None:
            require(len(self.atoms) >= 2 and len(set(self.atoms)) == len(self.atoms) and min(self.atoms) >= 0,
                    "atoms", "needs at least 2 distinct, non-negative atom indices")


@dataclass
class MolecularDataset:
    """Centred frames of one system, split into training and validation sets.

    Attributes
    ----------
    train, validation
        ``(F_train, n, 3)`` and ``(F_val, n, 3)`` float64 tensors in nm, centred.
    atoms
        ``(n,)`` indices of the kept atoms in the full system.
    sigma_data
        σ_d in nm (computed from ``train`` unless given).
    """

    train: torch.Tensor
    validation: torch.Tensor
    atoms: np.ndarray
    sigma_data: float

    @property
    def n_atoms(self) -> int:
        return self.train.shape[1]


def centre(x: torch.Tensor) -> torch.Tensor:
    """Remove the centre of geometry: ``(..., n, 3)`` → same shape."""
    return x - x.mean(dim=-2, keepdim=True)


def particle_sigma(x: torch.Tensor) -> float:
    """σ_d = sqrt(E‖x_c‖² / (3(n − 1))) of frames ``(F, n, 3)`` [nm]."""
    xc = centre(x.to(torch.float64))
    return math.sqrt(float(xc.pow(2).sum(dim=(1, 2)).mean()) / (3 * (x.shape[1] - 1)))


def random_rotations(n: int, generator: torch.Generator, dtype=torch.float64, device=None) -> torch.Tensor:
    """``n`` rotation matrices ``(n, 3, 3)`` drawn uniformly (Haar) from SO(3).

    QR of a Gaussian matrix with the signs of R's diagonal moved into Q gives Haar O(3); a column
    flip where det = −1 maps it to Haar SO(3).
    """
    g = torch.randn(n, 3, 3, generator=generator, dtype=dtype, device=device)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    flip = torch.ones(n, 3, dtype=dtype, device=device)
    flip[:, 2] = torch.sign(torch.linalg.det(q))
    return q * flip[:, None, :]


def load_dataset(config: MolecularDataConfig, system) -> MolecularDataset:
    """Read, subset, split and centre the frames of ``config`` for a loaded ``system``.

    Raises
    ------
    BoltzclfError
        If the trajectory is missing or unreadable, does not match the system, an atom index is out
        of range, or too few frames remain for both sets.
    """
    if config.trajectory is None:
        raise BoltzclfError("data.trajectory: required (a batched-dynamics run directory or a trajectory file)")
    columns = _read_columns(config, system)  # (W, F, N, 3)
    columns = columns[:, ::config.stride]
    if config.atoms is not None:
        bad = [i for i in config.atoms if i >= system.n_atoms]
        if bad:
            raise BoltzclfError(f"data.atoms: index {bad[0]} out of range for {system.spec.name} "
                                f"({system.n_atoms} atoms)")
    atoms = np.array(config.atoms if config.atoms is not None else range(system.n_atoms), dtype=np.int64)
    columns = columns[:, :, atoms]
    train, validation = _split(columns, config.validation_fraction, config.trajectory)
    train, validation = centre(torch.from_numpy(train)), centre(torch.from_numpy(validation))
    if config.align:
        reference = train[0]
        train, validation = kabsch_align(train, reference), kabsch_align(validation, reference)
    sigma = config.sigma_data if config.sigma_data is not None else particle_sigma(train)
    return MolecularDataset(train, validation, atoms, sigma)


def _read_columns(config: MolecularDataConfig, system) -> np.ndarray:
    """Frames as independent columns ``(W, F, N, 3)`` float64 (one column for a trajectory file)."""
    path = Path(config.trajectory)
    if path.is_dir():
        run = path / "dynamics" if (path / "dynamics" / "trajectory.dcd").exists() else path
        if not (run / "trajectory.dcd").exists():
            raise BoltzclfError(f"data.trajectory: {path} holds no trajectory.dcd (nor dynamics/trajectory.dcd)")
        frames = load_frames(run)  # (F, W, N, 3)
        if frames.shape[2] != system.n_atoms:
            raise BoltzclfError(f"data.trajectory: {run} has {frames.shape[2]} atoms, system "
                                f"{system.spec.name} has {system.n_atoms}")
        return frames.transpose(1, 0, 2, 3).astype(np.float64)
    return system.load_frames(path, config.topology)[None]


def _split(columns: np.ndarray, fraction: float, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation frames ``(F, N, 3)``: whole columns if there are several, else the tail."""
    n_columns, n_frames = columns.shape[:2]
    if n_columns > 1:
        n_val = int(math.ceil(fraction * n_columns)) if fraction > 0 else 0
        train, validation = columns[:n_columns - n_val], columns[n_columns - n_val:]
    else:
        n_val = int(math.ceil(fraction * n_frames)) if fraction > 0 else 0
        train, validation = columns[:, :n_frames - n_val], columns[:, n_frames - n_val:]
    train, validation = train.reshape(-1, *columns.shape[2:]), validation.reshape(-1, *columns.shape[2:])
    if train.shape[0] < 2:
        raise BoltzclfError(f"data.trajectory: {source} leaves {train.shape[0]} training frame(s); need >= 2")
    return train, validation


@dataclass(frozen=True)
class Molecule:
    """What a molecular model is built from: atom (bead) types, bonds and the data's statistics.

    ``atom_types`` ``(n,)`` element classes (0, 1, ...); ``bonds`` pairs of indices into the kept atoms;
    ``pair_mean``/``pair_std`` ``(P,)`` (pairwise models; None when a checkpoint will restore them).
    """

    atom_types: tuple[int, ...]
    bonds: tuple[tuple[int, int], ...]
    sigma_data: float
    pair_mean: torch.Tensor | None = None
    pair_std: torch.Tensor | None = None

    @property
    def n_atoms(self) -> int:
        return len(self.atom_types)


def element_classes(atomic_numbers: np.ndarray) -> tuple[int, ...]:
    """Atomic numbers ``(n,)`` → dense element classes 0, 1, ... in order of atomic number."""
    values = sorted(set(int(z) for z in atomic_numbers))
    return tuple(values.index(int(z)) for z in atomic_numbers)


def subset_bonds(bonds: np.ndarray, atoms: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Bonds ``(n_bonds, 2)`` of the full system among ``atoms``, renumbered to positions in ``atoms``.

    When no bond joins two kept atoms (e.g. Cα beads), consecutive kept atoms are bonded instead, the
    usual coarse-grained chain.
    """
    position = {int(a): k for k, a in enumerate(atoms)}
    kept = tuple(sorted((position[int(i)], position[int(j)]) for i, j in bonds
                        if int(i) in position and int(j) in position))
    return kept if kept else tuple((k, k + 1) for k in range(len(atoms) - 1))


def describe_molecule(system, dataset: MolecularDataset | None, atoms: np.ndarray, sigma_data: float) -> Molecule:
    """The :class:`Molecule` of ``atoms`` of a loaded ``system``; pair statistics from ``dataset.train``
    (None: left to a checkpoint to restore)."""
    stats = pair_statistics(dataset.train, sigma_data) if dataset is not None else (None, None)
    return Molecule(element_classes(system.atomic_numbers[atoms]), subset_bonds(system.bonds, atoms), sigma_data, *stats)


class MolecularData:
    """Batches ``(x0,)`` of training frames for the trainer, optionally relabelled and randomly rotated.

    Parameters
    ----------
    dataset
        The loaded frames.
    rotations
        Apply an independent uniform SO(3) rotation to every frame of a batch.
    device, dtype
        Where batches live.
    permutations
        Random relabelling of equivalent atoms applied to every frame of a batch (None: none).
    """

    def __init__(self, dataset: MolecularDataset, rotations: bool, device: torch.device,
                 dtype: torch.dtype = torch.float32, permutations: AtomPermutations | None = None):
        self.frames = dataset.train.to(device=device, dtype=dtype)
        self.rotations = rotations
        self.permutations = permutations

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor]:
        """One batch ``(batch_size, n, 3)``."""
        index = torch.randint(self.frames.shape[0], (batch_size,), generator=generator, device=self.frames.device)
        x = self.frames[index]
        if self.permutations is not None:
            x = self.permutations(x, generator)
        if self.rotations:
            x = x @ random_rotations(batch_size, generator, x.dtype, x.device)
        return (x,)


class PairedMolecularData:
    """Batches ``(x0, x1)`` for a stochastic interpolant between two ensembles of one molecule.

    x0 and x1 are drawn independently (the independent coupling); x0 is randomly rotated (Haar) when
    ``rotations`` and x1 is Kabsch-superposed onto its x0, so that (1 − t) x0 + t x1 looks like one
    molecule rather than an average over orientations. The same pairing must be used wherever the
    interpolant's marginals are sampled again (:func:`aligned_pairs`).

    Parameters
    ----------
    start, end
        Centred frames ``(F0, n, 3)`` and ``(F1, n, 3)`` [nm] of the t = 0 and t = 1 ensembles.
    permutations
        Relabelling of equivalent atoms (None: none): x0's at random, x1's to lie closest to x0 once
        superposed (:meth:`~boltzclf.training.equivalent_atoms.AtomPermutations.match`), so a methyl's
        hydrogens travel the short way round along the interpolant.
    """

    def __init__(self, start: torch.Tensor, end: torch.Tensor, rotations: bool, device: torch.device,
                 dtype: torch.dtype = torch.float32, permutations: AtomPermutations | None = None):
        self.start = start.to(device=device, dtype=dtype)
        self.end = end.to(device=device, dtype=dtype)
        self.rotations = rotations
        self.permutations = permutations

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch of pairs, each ``(batch_size, n, 3)``."""
        return aligned_pairs(self.start, self.end, batch_size, generator, self.rotations, self.permutations)


def aligned_pairs(start: torch.Tensor, end: torch.Tensor, n: int, generator: torch.Generator,
                  rotations: bool = True, permutations: AtomPermutations | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` independent pairs (x0 from ``start``, x1 from ``end``), x1 superposed on x0 and, with
    ``permutations``, relabelled as :class:`PairedMolecularData` says; both ``(n, atoms, 3)``."""
    device = start.device
    x0 = start[torch.randint(start.shape[0], (n,), generator=generator, device=device)]
    x1 = end[torch.randint(end.shape[0], (n,), generator=generator, device=device)]
    if permutations is not None:
        x0 = permutations(x0, generator)
    if rotations:
        x0 = x0 @ random_rotations(n, generator, x0.dtype, device)
    x1 = kabsch_align(x1, x0)
    if permutations is not None:  # relabelling moves the best superposition a little: superpose again
        x1 = kabsch_align(permutations.match(x1, x0), x0)
    return x0, x1

