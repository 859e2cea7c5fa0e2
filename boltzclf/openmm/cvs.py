"""Collective variables in torch: batched over ``(B, n_atoms, 3)`` nm positions, differentiable.

Primitives (:func:`dihedral`, :func:`distance`, :func:`kabsch_rmsd`, :func:`native_contacts`) take atom
indices; :func:`make_cv` resolves a CV by name against a molecule's topology:

``phi``, ``psi``            backbone dihedral [rad] when the molecule has exactly one (alanine dipeptide)
``phi<k>``, ``psi<k>``      backbone dihedral of residue number ``k`` (1-based, as in the PDB)
``rmsd_ca``                 Cα RMSD [nm] to the reference (folded) structure after optimal superposition
``q_native``                fraction of native heavy-atom contacts (Best, Hummer & Eaton 2013)
``end_to_end``              Cα distance [nm] between the first and the last residue (needs Cα atoms
                            in at least two residues)
``hb_N<i>_O<j>``            distance [nm] between backbone N of residue ``i`` and O of residue ``j``
                            (``hb_N3_O8`` is chignolin's Asp3–Thr8 register hydrogen bond)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import mdtraj
import numpy as np
import torch

from boltzclf.core.errors import BoltzclfError
from boltzclf.geometry import dihedral as atom_chain_dihedral

#: The CV names :func:`make_cv` resolves (``<k>``, ``<i>``, ``<j>``: residue numbers).
CV_NAMES = ("phi", "psi", "phi<k>", "psi<k>", "rmsd_ca", "q_native", "end_to_end", "hb_N<i>_O<j>")

#: Best–Hummer–Eaton switching: steepness β [1/nm], tolerance λ, native cutoff [nm], min separation.
Q_BETA, Q_LAMBDA, Q_CUTOFF, Q_MIN_SEPARATION = 50.0, 1.8, 0.45, 3


def dihedral(x: torch.Tensor, quads: torch.Tensor) -> torch.Tensor:
    """Dihedral angles ``(B, K)`` in radians (−π, π] of atom quadruples ``quads`` ``(K, 4)``.

    Same sign convention as :func:`mdtraj.compute_dihedrals` and OpenMM (the force field's formula).
    """
    return atom_chain_dihedral(*(x[:, quads[:, i]] for i in range(4)))


def distance(x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Distances ``(B, K)`` [nm] between atom pairs ``pairs`` ``(K, 2)``."""
    return (x[:, pairs[:, 0]] - x[:, pairs[:, 1]]).norm(dim=-1)


def kabsch_rmsd(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """RMSD ``(B,)`` [nm] of ``x`` ``(B, n, 3)`` to ``reference`` ``(n, 3)`` after optimal rigid superposition.

    Uses the Kabsch SVD with the reflection fix (proper rotations only); unweighted.
    """
    xc, rc, (_, s, _, sign) = _kabsch(x, reference)
    trace = s[:, 0] + s[:, 1] + sign * s[:, 2]
    msd = ((xc ** 2).sum(dim=(1, 2)) + (rc ** 2).sum() - 2 * trace) / x.shape[1]
    return msd.clamp_min(0).sqrt()


def kabsch_align(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, n, 3)`` centred and rotated (proper rotations only) onto the centred ``reference``:
    one structure ``(n, 3)`` for all, or one per sample ``(B, n, 3)``."""
    xc, _, (u, _, vh, sign) = _kabsch(x, reference)
    d = torch.ones(x.shape[0], 3, dtype=x.dtype, device=x.device)
    d[:, 2] = sign
    return xc @ ((u * d[:, None, :]) @ vh)


def _kabsch(x: torch.Tensor, reference: torch.Tensor):
    """Centred ``x`` and ``reference`` and the SVD ``(u, s, vh)`` of their cross-covariance with the sign
    of det(u vh) (−1 where the best orthogonal map is a reflection, which the callers exclude)."""
    xc = x - x.mean(dim=1, keepdim=True)
    rc = (reference - reference.mean(dim=-2, keepdim=True)).to(x)
    u, s, vh = torch.linalg.svd(xc.transpose(1, 2) @ rc)
    return xc, rc, (u, s, vh, torch.sign(torch.linalg.det(u @ vh)))


def native_contacts(x: torch.Tensor, pairs: torch.Tensor, native: torch.Tensor) -> torch.Tensor:
    """Fraction of native contacts ``(B,)``: mean of ``1 / (1 + exp(β (r − λ r₀)))`` over ``pairs``.

    ``native`` ``(K,)`` holds the native distances r₀ [nm].
    """
    r = distance(x, pairs)
    return torch.sigmoid(-Q_BETA * (r - Q_LAMBDA * native.to(r))).mean(dim=1)


@dataclass(frozen=True)
class CollectiveVariable:
    """A named CV: ``fn(x (B, n, 3) nm) -> (B,)``; ``periodic`` CVs live on (−π, π]."""

    name: str
    unit: str
    periodic: bool
    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _backbone_dihedral(kind: str, residue: str | None, topology: mdtraj.Topology) -> CollectiveVariable:
    traj = mdtraj.Trajectory(np.zeros((1, topology.n_atoms, 3)), topology)
    quads = (mdtraj.compute_phi if kind == "phi" else mdtraj.compute_psi)(traj)[0]
    owner = [topology.atom(int(q[2 if kind == "phi" else 1])).residue.resSeq for q in quads]
    if residue is None:
        if len(quads) != 1:
            raise BoltzclfError(f"--cv {kind}: the molecule has {len(quads)} {kind} angles; name one "
                                f"as {kind}<residue number>, one of {owner}")
        chosen = quads
    else:
        if int(residue) not in owner:
            raise BoltzclfError(f"--cv {kind}{residue}: no {kind} angle for residue {residue}; have {owner}")
        chosen = quads[[owner.index(int(residue))]]
    index = torch.as_tensor(chosen, dtype=torch.long)
    return CollectiveVariable(f"{kind}{residue or ''}", "rad", True, lambda x: dihedral(x, index)[:, 0])


def _atom(topology: mdtraj.Topology, resseq: int, name: str, cv: str) -> int:
    found = [a.index for a in topology.atoms if a.residue.resSeq == resseq and a.name == name]
    if not found:
        raise BoltzclfError(f"--cv {cv}: no atom {name} in residue {resseq}")
    return found[0]


def _native_contact_pairs(topology: mdtraj.Topology, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heavy = [a for a in topology.atoms if a.element.symbol != "H"]
    pairs = np.array([(a.index, b.index) for i, a in enumerate(heavy) for b in heavy[i + 1:]
                      if abs(a.residue.index - b.residue.index) > Q_MIN_SEPARATION])
    if len(pairs) == 0:
        raise BoltzclfError("--cv q_native: the molecule has no residues far enough apart in sequence")
    r0 = np.linalg.norm(reference[pairs[:, 0]] - reference[pairs[:, 1]], axis=1)
    keep = r0 < Q_CUTOFF
    return pairs[keep], r0[keep]


def make_cv(name: str, topology: mdtraj.Topology, reference: np.ndarray) -> CollectiveVariable:
    """Resolve CV ``name`` (see module docstring) for ``topology``; ``reference`` ``(n, 3)`` nm.

    Raises
    ------
    BoltzclfError
        If the name is unknown or does not apply to this molecule.
    """
    ref = torch.as_tensor(reference, dtype=torch.float64)
    if match := re.fullmatch(r"(phi|psi)(\d+)?", name):
        return _backbone_dihedral(match.group(1), match.group(2), topology)
    if name == "rmsd_ca":
        ca = torch.as_tensor(topology.select("name CA"), dtype=torch.long)
        if len(ca) < 3:
            raise BoltzclfError(f"--cv rmsd_ca: needs at least 3 CA atoms, the molecule has {len(ca)}")
        return CollectiveVariable(name, "nm", False, lambda x: kabsch_rmsd(x[:, ca], ref[ca]))
    if name == "q_native":
        pairs, r0 = _native_contact_pairs(topology, reference)
        pairs_t, r0_t = torch.as_tensor(pairs), torch.as_tensor(r0)
        return CollectiveVariable(name, "fraction", False, lambda x: native_contacts(x, pairs_t, r0_t))
    if name == "end_to_end":
        ca = topology.select("name CA")
        residues = {topology.atom(int(i)).residue.index for i in ca}
        if len(residues) < 2:
            sequence = "-".join(f"{r.name}{r.resSeq}" for r in topology.residues)
            raise BoltzclfError(f"--cv end_to_end: undefined for the molecule {sequence}: it has CA atoms in "
                                f"{len(residues)} residue(s), the CV needs two (first and last)")
        pair = torch.as_tensor([[ca[0], ca[-1]]], dtype=torch.long)
        return CollectiveVariable(name, "nm", False, lambda x: distance(x, pair)[:, 0])
    if match := re.fullmatch(r"hb_N(\d+)_O(\d+)", name):
        pair = torch.as_tensor([[_atom(topology, int(match.group(1)), "N", name),
                                 _atom(topology, int(match.group(2)), "O", name)]])
        return CollectiveVariable(name, "nm", False, lambda x: distance(x, pair)[:, 0])
    raise BoltzclfError(f"--cv {name}: unknown collective variable; use one of {', '.join(CV_NAMES)}")
