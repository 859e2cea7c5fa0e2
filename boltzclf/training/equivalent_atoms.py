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
only where the system's energy is measured to be invariant under the group's generators (a
transposition and a cycle), so a topology rule can never impose a symmetry the force field lacks.
"""
from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from typing import Callable, Sequence

import numpy as np
import torch

LOG = logging.getLogger(__name__)

INVARIANCE_TOLERANCE_KT = 1e-3  # the energy change [kT] below which a relabelling counts as a symmetry


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
    for three or more, the cycle through all of them (as maps atom → atom taking its place)."""
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
        Reduced energy [kT], ``(B, n, 3)`` [nm] → ``(B,)``.
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


def equivalent_atom_groups(system, frames: torch.Tensor) -> tuple[tuple[int, ...], ...]:
    """The equivalent-atom groups of a loaded molecular ``system`` (topology candidates that its energy,
    measured on ``frames`` ``(F, n, 3)`` [nm], is invariant under)."""
    names = [f"{atom.residue.name}{atom.residue.index + 1}:{atom.name}" for atom in system.topology.atoms()]
    candidates = terminal_groups(system.atomic_numbers, system.bonds)
    return invariant_groups(candidates, system.energy, frames.to(torch.float64), names)


def system_permutations(system, frames: torch.Tensor) -> "AtomPermutations":
    """The random relabelling of every equivalent-atom group of ``system`` (measured on ``frames``
    ``(F, n, 3)`` [nm], all atoms), with the groups logged."""
    groups = equivalent_atom_groups(system, frames)
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
        self._orders = [torch.tensor(list(itertools.permutations(range(len(g))))) for g in self.groups]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Frames ``(B, n, 3)`` with each group's atoms permuted (a uniform draw from S_k per frame and group)."""
        index = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1).clone()
        for group in self.groups:
            members = torch.tensor(group, device=x.device)
            order = torch.rand(x.shape[0], len(group), generator=generator, device=x.device).argsort(dim=1)
            index[:, members] = members[order]
        return x.gather(1, index[..., None].expand(-1, -1, x.shape[2]))

    def match(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, n, 3)`` with each group relabelled to lie closest to ``reference`` ``(B, n, 3)`` (the
        labelling of least squared distance over the group's atoms; every labelling is tried).

        The choice commutes with relabelling both inputs alike, so pairs (x0, match(x1, x0)) with x0
        relabelled uniformly at random keep the true x1 marginal when it is invariant under the group.
        """
        index = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1).clone()
        for group, orders in zip(self.groups, self._orders):
            members = torch.tensor(group, device=x.device)
            candidates = members[orders.to(x.device)]  # (k!, k)
            cost = (x[:, candidates] - reference[:, None, members]).pow(2).sum(dim=(-1, -2))  # (B, k!)
            index[:, members] = candidates[cost.argmin(dim=1)]
        return x.gather(1, index[..., None].expand(-1, -1, x.shape[2]))
