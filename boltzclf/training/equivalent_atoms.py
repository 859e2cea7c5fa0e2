"""Equivalent atoms: relabelling symmetries of a molecule's energy, and training-data augmentation by them.

The three hydrogens of a methyl group carry identical force-field parameters, so the energy — and
the Boltzmann density — is unchanged by any permutation of their labels. A network that sees atom
identities (pair distances, bonded graphs) does not know this, and short trajectories do not teach
it: a methyl rotor hops between its three labelled rotamers on a time scale of tens of picoseconds,
so walkers of a 40 ps run mostly keep the labelling they started with, and a model trained on some
walkers rates the others' labellings several kT too low (alanine dipeptide in vacuum: 4 kT between
held-out walkers that differ only in the labelling of the Cβ hydrogens). Drawing a uniformly random
permutation of every group of equivalent atoms for each training sample symmetrises the data
exactly: the permuted frames are still samples of the true density.

Groups are found from the topology (terminal atoms of one element bonded to the same atom) and kept
only where the system's energy (the torch force field in float64, so round-off cannot pass for a
symmetry or hide one) is measured to be invariant under the group's generators (a transposition and a
cycle), so a topology rule can never impose a symmetry the force field lacks.
"""
from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from typing import Callable, Sequence

import numpy as np
import torch

from boltzclf.energy.units import kt_kj_per_mol
from boltzclf.forcefield.field import TorchForceField

LOG = logging.getLogger(__name__)

INVARIANCE_TOLERANCE_KT = 1e-3  # the energy change [kT] below which a relabelling counts as a symmetry
MAX_GROUP_SIZE = 5  # matching tries every labelling of a group: 5! = 120 at most
CHECK_FRAMES = 4  # frames the energy check measures on, spread over the given ones


def terminal_groups(atomic_numbers: Sequence[int], bonds: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """Candidate groups: atoms with one bond, of one element, bonded to the same atom (≥ 2 per group).

    Parameters
    ----------
    atomic_numbers
        ``(n,)`` atomic numbers.
    bonds
        ``(n_bonds, 2)`` atom indices.

    Returns
    -------
    tuple of tuples
        Sorted atom indices of each group, the groups ordered by their first atom.
    """
    neighbours: dict[int, list[int]] = defaultdict(list)
    for i, j in np.asarray(bonds, dtype=np.int64).reshape(-1, 2):
        neighbours[int(i)].append(int(j))
        neighbours[int(j)].append(int(i))
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for atom, bonded in neighbours.items():
        if len(bonded) == 1:
            groups[(bonded[0], int(atomic_numbers[atom]))].append(atom)
    return tuple(sorted(tuple(sorted(g)) for g in groups.values() if len(g) >= 2))


def generators(group: Sequence[int]) -> list[dict[int, int]]:
    """Relabellings that generate the permutations of ``group``: the swap of its first two atoms and,
    for three or more, the cycle through all of them. Each is a map ``{a: b}``: after relabelling,
    position ``a`` holds the coordinates of atom ``b``."""
    swap = {group[0]: group[1], group[1]: group[0]}
    if len(group) == 2:
        return [swap]
    return [swap, {a: group[(k + 1) % len(group)] for k, a in enumerate(group)}]


def invariant_groups(groups: Sequence[Sequence[int]], energy: Callable[[torch.Tensor], torch.Tensor],
                     frames: torch.Tensor, names: Sequence[str] | None = None) -> tuple[tuple[int, ...], ...]:
    """The ``groups`` whose relabellings leave ``energy`` unchanged on ``frames``.

    Parameters
    ----------
    groups
        Candidate groups of atom indices.
    energy
        Reduced energy [kT], ``(B, n, 3)`` [nm] → ``(B,)``, or ``(m, B)`` for m energies that must all be
        invariant (e.g. both ends of a solvation path).
    frames
        ``(F, n, 3)`` configurations [nm] to measure on (a few suffice).
    names
        Atom names for the log message of a dropped group.

    Returns
    -------
    tuple of tuples
        The groups kept; a dropped one is logged with the largest energy change it caused.
    """
    kept = []
    reference = energy(frames).double()
    for group in groups:
        change = 0.0
        for relabel in generators(group):
            index = torch.arange(frames.shape[1])
            index[list(relabel)] = torch.tensor(list(relabel.values()))
            change = max(change, float((energy(frames[:, index]).double() - reference).abs().max()))
        if change <= INVARIANCE_TOLERANCE_KT:
            kept.append(tuple(group))
        else:
            label = ", ".join(names[a] if names else str(a) for a in group)
            LOG.warning("atoms %s: relabelling them changes the energy by %.3g kT; not treated as equivalent",
                        label, change)
    return tuple(kept)


def equivalent_atom_groups(system, frames: torch.Tensor,
                           energy: Callable[[torch.Tensor], torch.Tensor] | None = None
                           ) -> tuple[tuple[int, ...], ...]:
    """The equivalent-atom groups of a molecule: its topology candidates that ``energy`` is invariant under.

    Parameters
    ----------
    system : boltzclf.openmm.MolecularSystem
        The loaded system (topology, atomic numbers, bonds and the OpenMM system).
    frames
        ``(F, n, 3)`` configurations [nm], all atoms; the check measures on ``CHECK_FRAMES`` of them
        spread evenly over the set (consecutive frames of one walker are nearly the same).
    energy
        Reduced energies [kT] to check (see :func:`invariant_groups`); default: the system's torch force
        field in float64.

    Returns
    -------
    tuple of tuples
        The groups kept. Groups of more than ``MAX_GROUP_SIZE`` atoms are left out with a warning.
    """
    names = [f"{atom.residue.name}{atom.residue.index + 1}:{atom.name}" for atom in system.topology.atoms()]
    candidates = []
    for group in terminal_groups(system.atomic_numbers, system.bonds):
        if len(group) <= MAX_GROUP_SIZE:
            candidates.append(group)
        else:
            LOG.warning("atoms %s: %d equivalent atoms are more than the %d whose labellings are matched; "
                        "not relabelled", ", ".join(names[a] for a in group), len(group), MAX_GROUP_SIZE)
    if energy is None:
        field = TorchForceField(system.system).to(torch.float64)
        kT = kt_kj_per_mol(system.temperature)
        energy = lambda x: field(x) / kT  # noqa: E731
    step = max(1, frames.shape[0] // CHECK_FRAMES)
    return invariant_groups(candidates, energy, frames[::step][:CHECK_FRAMES].to(torch.float64), names)


def system_permutations(system, frames: torch.Tensor,
                        energy: Callable[[torch.Tensor], torch.Tensor] | None = None) -> "AtomPermutations":
    """The random relabelling of every equivalent-atom group of ``system`` (arguments as for
    :func:`equivalent_atom_groups`), with the groups logged."""
    groups = equivalent_atom_groups(system, frames, energy)
    LOG.info("equivalent atoms relabelled at random: %s", "; ".join(",".join(map(str, g)) for g in groups) or "none")
    return AtomPermutations(groups)


class AtomPermutations:
    """Uniformly random relabelling of every group of equivalent atoms, independently per frame.

    Parameters
    ----------
    groups
        Disjoint groups of atom indices (e.g. :func:`equivalent_atom_groups`).
    """

    def __init__(self, groups: Sequence[Sequence[int]]):
        self.groups = tuple(tuple(int(a) for a in g) for g in groups)
        self._members = [torch.tensor(g) for g in self.groups]
        self._labellings = [m[torch.tensor(list(itertools.permutations(range(len(m)))))] for m in self._members]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Frames ``(B, n, 3)`` with each group's atoms permuted (a uniform draw from S_k per frame and group)."""
        index = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1).clone()
        for members in self._members:
            members = members.to(x.device)
            order = torch.rand(x.shape[0], len(members), generator=generator, device=x.device).argsort(dim=1)
            index[:, members] = members[order]
        return x.gather(1, index[..., None].expand(-1, -1, x.shape[2]))

    def match(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, n, 3)`` with each group relabelled to lie closest to ``reference`` ``(B, n, 3)`` (the
        labelling of least squared distance over the group's atoms; every labelling is tried).

        The choice commutes with relabelling both inputs alike, so pairs (x0, match(x1, x0)) with x0
        relabelled uniformly at random keep the true x1 marginal when it is invariant under the group.
        """
        index = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1).clone()
        for members, candidates in zip(self._members, self._labellings):
            members, candidates = members.to(x.device), candidates.to(x.device)  # (k,), (k!, k)
            cost = (x[:, candidates] - reference[:, None, members]).pow(2).sum(dim=(-1, -2))  # (B, k!)
            index[:, members] = candidates[cost.argmin(dim=1)]
        return x.gather(1, index[..., None].expand(-1, -1, x.shape[2]))
