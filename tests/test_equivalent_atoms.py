"""Equivalent atoms: the topology candidates, the energy check that keeps only true symmetries, the
random relabelling (uniform over S_k, a relabelling and nothing else), the matching of x1's labels to
x0's, and their use in the interpolant pairs."""
from __future__ import annotations

import itertools
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from boltzclf.core.config import from_mapping
from boltzclf.core.errors import ConfigError
from boltzclf.training.equivalent_atoms import (AtomPermutations, equivalent_atom_groups, invariant_groups,
                                                terminal_groups)
from boltzclf.pipelines.solvation_learned import EndEnsembles, relabelled_held_out
from boltzclf.training.molecular_data import MolecularData, MolecularDataConfig, PairedMolecularData, aligned_pairs

# a methanol-like graph: C0 bonded to H1, H2, H3 and O4; O4 bonded to H5; plus a C6 bonded to two
# oxygens O7, O8 and to C0 (so O7/O8 are terminal oxygens on one atom, H5 is alone on O4)
ATOMIC_NUMBERS = [6, 1, 1, 1, 8, 1, 6, 8, 8]
BONDS = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [4, 5], [0, 6], [6, 7], [6, 8]])


def test_terminal_groups_are_same_element_single_bond_atoms_on_one_atom():
    assert terminal_groups(ATOMIC_NUMBERS, BONDS) == ((1, 2, 3), (7, 8))
    mixed = [6, 1, 1, 9, 8, 1, 6, 8, 8]  # a fluorine in place of H3: not equivalent to H1/H2
    assert terminal_groups(mixed, BONDS) == ((1, 2), (7, 8))


def test_invariant_groups_keep_symmetries_of_the_energy_and_drop_the_rest(caplog):
    weights = torch.tensor([1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 3.0, 3.5])  # O7 and O8 differ

    def energy(x):
        return (weights[:, None] * x ** 2).sum(dim=(1, 2))

    frames = torch.randn(3, 9, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with caplog.at_level(logging.WARNING):
        kept = invariant_groups(((1, 2, 3), (7, 8)), energy, frames, names=[f"A{i}" for i in range(9)])
    assert kept == ((1, 2, 3),)
    assert "A7, A8" in caplog.text


def test_every_one_of_several_energies_must_be_invariant():
    """Both ends of a solvation path: a group symmetric under the first energy but not the second goes."""
    def energies(x):
        symmetric = x[:, 1:4].pow(2).sum(dim=(1, 2))
        return torch.stack([symmetric, symmetric + 0.1 * x[:, 1].pow(2).sum(1)])

    frames = torch.randn(3, 9, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert invariant_groups(((1, 2, 3),), lambda x: energies(x)[0], frames) == ((1, 2, 3),)
    assert invariant_groups(((1, 2, 3),), energies, frames) == ()


def test_groups_too_large_to_match_are_left_out_and_the_check_spreads_its_frames(caplog):
    """Six terminal fluorines on one atom (6! labellings) are not relabelled; the energy check measures
    on frames spread over the set, so a symmetry broken only late in the set is still seen."""
    atomic_numbers = [16, 9, 9, 9, 9, 9, 9, 6, 1, 1]
    bonds = np.array([[0, a] for a in range(1, 7)] + [[0, 7], [7, 8], [7, 9]])
    residue = SimpleNamespace(name="MOL", index=0)
    system = SimpleNamespace(atomic_numbers=atomic_numbers, bonds=bonds, topology=SimpleNamespace(
        atoms=lambda: [SimpleNamespace(residue=residue, name=f"X{i}") for i in range(10)]))
    frames = torch.randn(40, 10, 3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    frames[30:, 8] += 5.0  # the late frames move H8 far away: there the energy below tells H8 from H9

    def energy(x):
        return x.pow(2).sum(dim=(1, 2)) + torch.relu(x[:, 8].norm(dim=1) - 4.0)

    with caplog.at_level(logging.WARNING):
        assert equivalent_atom_groups(system, frames[:30], energy) == ((8, 9),)
        assert equivalent_atom_groups(system, frames, energy) == ()
    assert "MOL1:X1, MOL1:X2, MOL1:X3, MOL1:X4, MOL1:X5, MOL1:X6: 6 equivalent atoms" in caplog.text


def test_a_swap_symmetric_but_not_cyclic_energy_loses_its_group():
    """S_3 needs both generators: an energy symmetric in atoms 1 and 2 only must not pass."""
    def energy(x):
        return (x[:, 1] - x[:, 2]).pow(2).sum(1) + 5.0 * x[:, 3].pow(2).sum(1) + x[:, 1].pow(2).sum(1) \
            + x[:, 2].pow(2).sum(1)

    frames = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert invariant_groups(((1, 2, 3),), energy, frames) == ()
    assert invariant_groups(((1, 2),), energy, frames) == ((1, 2),)


def test_permutations_are_uniform_relabellings_of_each_group_only():
    n = 60_000
    x = torch.arange(9 * 3, dtype=torch.float64).reshape(1, 9, 3).expand(n, -1, -1).clone()
    permuted = AtomPermutations(((1, 2, 3), (7, 8)))(x, torch.Generator().manual_seed(2))
    rest = [0, 4, 5, 6]
    assert torch.equal(permuted[:, rest], x[:, rest])
    # each row is a relabelling: the atoms of a group keep their set of positions
    source = (permuted[..., 0] / 3).long()  # which original atom sits at each position
    for group in ((1, 2, 3), (7, 8)):
        assert torch.equal(source[:, list(group)].sort(dim=1).values, torch.tensor(group).expand(n, -1))
    # uniform over S_3 and S_2: every permutation's count within 4 binomial SDs of n / k!
    for group in ((1, 2, 3), (7, 8)):
        perms = list(itertools.permutations(group))
        counts = [int((source[:, list(group)] == torch.tensor(p)).all(1).sum()) for p in perms]
        p = 1 / len(perms)
        assert all(abs(c - n * p) <= 4 * (n * p * (1 - p)) ** 0.5 for c in counts), counts


def test_match_picks_the_labelling_nearest_the_reference_and_commutes_with_relabelling():
    gen = torch.Generator().manual_seed(7)
    permutations = AtomPermutations(((1, 2, 3), (7, 8)))
    x = torch.randn(500, 9, 3, generator=gen, dtype=torch.float64)
    relabelled = permutations(x, gen)
    reference = relabelled + 0.01 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    assert torch.equal(permutations.match(x, reference), relabelled)  # the labelling is recovered exactly
    # brute force on the first rows: no labelling of the group lies closer to the reference
    g = permutations(torch.arange(9.0).reshape(1, 9, 1).expand(500, -1, 3).contiguous(), gen)[..., 0].long()
    shuffle = lambda y: y.gather(1, g[..., None].expand(-1, -1, 3))  # noqa: E731 — one relabelling per row
    other = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    assert torch.equal(permutations.match(shuffle(x), shuffle(other)), shuffle(permutations.match(x, other)))
    for row in range(5):
        best = min(((x[row, list(p)] - other[row, [1, 2, 3]]) ** 2).sum() for p in itertools.permutations((1, 2, 3)))
        got = permutations.match(x, other)[row]
        assert torch.isclose(((got[[1, 2, 3]] - other[row, [1, 2, 3]]) ** 2).sum(), best)


def test_matched_pairs_keep_the_end_marginal_when_the_start_is_relabelled_at_random():
    """x1's labelling follows x0's, yet its marginal stays the (label-symmetric) end density: the share of
    x1 frames whose atom 1 lies above atom 2 is 1/2 — unlike matching to an unrelabelled x0."""
    gen = torch.Generator().manual_seed(8)
    n = 20_000
    base = torch.zeros(1, 4, 3, dtype=torch.float64)
    base[0, 1, 2], base[0, 2, 2] = 0.3, -0.3  # x0: atom 1 above atom 2 (z), always
    start = base + 0.05 * torch.randn(64, 4, 3, generator=gen, dtype=torch.float64)
    end = base + 0.2 * torch.randn(256, 4, 3, generator=gen, dtype=torch.float64)
    end = AtomPermutations(((1, 2),))(end, gen)  # a symmetric end ensemble
    permutations = AtomPermutations(((1, 2),))
    _, x1 = aligned_pairs(start, end, n, gen, rotations=False, permutations=permutations)
    above = float((x1[:, 1, 2] > x1[:, 2, 2]).double().mean())
    assert abs(above - 0.5) <= 4 * (0.25 / n) ** 0.5
    x0 = start[torch.randint(64, (n,), generator=gen)]
    biased = permutations.match(end[torch.randint(256, (n,), generator=gen)], x0)
    assert float((biased[:, 1, 2] > biased[:, 2, 2]).double().mean()) > 0.7


def test_alanine_dipeptide_groups_are_its_three_methyls():
    from boltzclf.openmm.system import load_system

    system = load_system("systems/alanine_dipeptide_implicit.yaml")
    frames = torch.as_tensor(system.positions, dtype=torch.float64)[None]
    groups = equivalent_atom_groups(system, frames)
    names = [f"{a.residue.name}:{a.name}" for a in system.topology.atoms()]
    assert [[names[a] for a in g] for g in groups] == [["ACE:H1", "ACE:H2", "ACE:H3"],
                                                       ["ALA:HB1", "ALA:HB2", "ALA:HB3"],
                                                       ["NME:H1", "NME:H2", "NME:H3"]]
    # independently: the OpenMM energy of a randomly relabelled frame equals the original's
    relabelled = AtomPermutations(groups)(frames.expand(8, -1, -1), torch.Generator().manual_seed(3))
    assert not torch.equal(relabelled, frames.expand(8, -1, -1))
    assert torch.allclose(system.energy(relabelled), system.energy(frames).expand(8), atol=1e-4, rtol=0)  # OpenMM single precision


def test_paired_data_relabel_x0_match_x1_and_aligned_pairs_repeat_training():
    start = torch.randn(5, 9, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    end = torch.randn(6, 9, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    permutations = AtomPermutations(((1, 2, 3),))
    data = PairedMolecularData(start, end, rotations=False, device=torch.device("cpu"), dtype=torch.float64,
                               permutations=permutations)
    x0, x1 = data.sample(4096, torch.Generator().manual_seed(6))
    again = aligned_pairs(start, end, 4096, torch.Generator().manual_seed(6), False, permutations)
    assert torch.equal(x0, again[0]) and torch.equal(x1, again[1])  # TI redraws what training drew
    # x0's methyl hydrogens are relabelled: each of the three positions comes from any of the three atoms
    holds = (x0[:, None, None, 1] == start[None, :, 1:4]).all(-1).any(1)  # (n, 3): slot 1 holds atom 1/2/3
    assert torch.equal(holds.sum(1), torch.ones(len(x0), dtype=torch.long))
    assert holds.double().mean(0).min() > 0.3
    plain = aligned_pairs(start, end, 4096, torch.Generator().manual_seed(6), False)
    assert not torch.equal(plain[0], x0)


def test_training_batches_and_held_out_frames_are_relabelled():
    """MolecularData relabels every batch; the solvation estimate relabels the held-out frames once
    (training frames untouched, the same draw for the same seed)."""
    frames = torch.randn(3, 9, 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    dataset = SimpleNamespace(train=frames)
    permutations = AtomPermutations(((1, 2, 3),))
    plain = MolecularData(dataset, False, torch.device("cpu"), torch.float64)
    mixed = MolecularData(dataset, False, torch.device("cpu"), torch.float64, permutations=permutations)
    (x,) = plain.sample(3000, torch.Generator().manual_seed(12))
    (y,) = mixed.sample(3000, torch.Generator().manual_seed(12))
    slot = (y[:, None, None, 1] == frames[None, :, 1:4]).all(-1).any(1).double().mean(0)  # which atom sits at H1
    assert torch.equal(x[:, [0, 4, 5, 6, 7, 8]], y[:, [0, 4, 5, 6, 7, 8]])  # the same frames drawn
    assert slot.min() > 0.28  # atoms 1, 2 and 3 each take position 1 about a third of the time
    by_x = lambda z: z.gather(1, z[..., :1].argsort(1).expand(-1, -1, 3))  # noqa: E731 — order atoms by x
    assert torch.equal(by_x(x[:, 1:4]), by_x(y[:, 1:4]))  # the same atoms, only their labels changed
    ends = EndEnsembles(frames, frames, frames.clone(), frames.clone())
    relabelled = relabelled_held_out(ends, permutations, seed=0)
    assert relabelled.train_start is frames and relabelled.train_end is frames
    assert not torch.equal(relabelled.start, frames) and not torch.equal(relabelled.end, frames)
    assert torch.equal(relabelled.start, relabelled_held_out(ends, permutations, seed=0).start)
    assert relabelled_held_out(ends, None, seed=0) is ends


def test_permute_equivalent_is_refused_for_a_subset_of_atoms():
    with pytest.raises(ConfigError, match="permute_equivalent"):
        from_mapping(MolecularDataConfig, {"system": "s.yaml", "atoms": [4, 6, 8], "permute_equivalent": True},
                     "test.yaml")
