"""Metrics of (weighted) alanine-dipeptide samples against a reference ensemble.

Samples come from any sampler (SMC, reweighted flow samples, Langevin chains) as configurations
``(N, n, 3)`` with optional log-weights and cluster ids (resampling ancestors or Langevin walkers,
for the error bars). The metrics, all against the reference (MD) ensemble:

* ``dF_phi`` ± ``dF_phi_se``: ΔF(φ > 0 vs φ < 0) in kT (:func:`~boltzclf.estimators.populations.phi_sign_free_energy`),
  ``dF_phi_error`` = sample − reference and ``dF_phi_z`` = that over the combined standard error;
* ``populations`` (C7eq, C5, αR, αL ± SE, :func:`~boltzclf.estimators.populations.basin_populations`) and
  ``populations_tv``, their total-variation distance ½ Σ |p − p_ref| from the reference's: unlike
  ΔF(φ > 0 vs φ < 0), whose φ > 0 basin holds 0.3 % of the reference, these are measurable with the
  few independent lineages a CPU-trained energy leaves SMC;
* ``pmf_error``: ScoreMD's φ/ψ PMF error in kT² (:func:`~boltzclf.estimators.dihedral_histograms.pmf_error`);
* ``t_w2``: Wasserstein-2 between the φ/ψ clouds on the torus (radians); ``e_w2``: between the true
  reduced energies in kT (all-atom samples only);
* ``ess``: Kish ESS/N of the weights, or, for unweighted correlated chains, n_eff/N of the basin
  populations (Σ P(1 − P) / Σ SE², the walkers' autocorrelation included);
  ``n_clusters``: distinct ancestors (after SMC resampling: the independent lineages left) or walkers.

**Chirality.** The force field is invariant under reflection, so its Boltzmann density gives the mirror
image of every configuration (D-alanine) the same weight. An E(3)-invariant learned energy is too, and
a sampler driven by one produces both. Every sample whose Cα is of the other hand than the reference's
is reflected (x → −x on the centred configuration; this also flips φ and ψ): a measure-preserving map
under which both densities are unchanged, so weights stay valid. ``n_mirrored`` reports how many.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from boltzclf.estimators.dihedral_histograms import pmf_error
from boltzclf.estimators.importance import effective_sample_size
from boltzclf.estimators.populations import basin_populations, phi_sign_free_energy
from boltzclf.estimators.wasserstein import energy_w2, torus_w2
from boltzclf.openmm.cvs import dihedral

#: Alanine dipeptide (openmmtools atom order): φ = C(ACE)–N–CA–C, ψ = N–CA–C–N(NME).
ALDP_PHI, ALDP_PSI = (4, 6, 8, 14), (6, 8, 14, 16)
#: Cα chirality: sign of (N − CA)·[(C − CA) × (CB − CA)] with atoms (CA, N, C, CB).
ALDP_CHIRAL_CENTRE = (8, 6, 14, 10)
#: The 5 backbone heavy atoms of the coarse-grained model (C, N, CA, C, N); φ and ψ in bead numbering.
ALDP_BACKBONE = (4, 6, 8, 14, 16)
CG_PHI, CG_PSI = (0, 1, 2, 3), (1, 2, 3, 4)


def backbone_angles(x: torch.Tensor, phi_atoms=ALDP_PHI, psi_atoms=ALDP_PSI) -> np.ndarray:
    """(φ, ψ) ``(N, 2)`` in radians of configurations ``x`` ``(N, n, 3)``."""
    quads = torch.tensor([phi_atoms, psi_atoms], dtype=torch.long)
    with torch.no_grad():
        return dihedral(x.to(torch.float64), quads).cpu().numpy()


def chirality(x: torch.Tensor, centre=ALDP_CHIRAL_CENTRE) -> torch.Tensor:
    """Sign ``(N,)`` (+1/−1) of the triple product at a stereocentre ``(centre, a, b, c)``."""
    o, a, b, c = (x[:, i] for i in centre)
    return torch.sign(((a - o) * torch.linalg.cross(b - o, c - o)).sum(-1))


def match_chirality(x: torch.Tensor, reference_sign: float, centre=ALDP_CHIRAL_CENTRE) -> tuple[torch.Tensor, int]:
    """Reflect (x → −x, centred) every configuration whose stereocentre has the other hand.

    Returns the configurations ``(N, n, 3)`` and the number reflected.
    """
    mirrored = chirality(x, centre) != reference_sign
    xc = x - x.mean(dim=1, keepdim=True)
    return torch.where(mirrored[:, None, None], -xc, xc), int(mirrored.sum())


def aldp_angles(samples: torch.Tensor, atoms: np.ndarray, native: np.ndarray) -> tuple[np.ndarray, int]:
    """(φ, ψ) ``(N, 2)`` of all-atom or 5-bead backbone alanine-dipeptide samples ``(N, n, 3)``.

    All-atom samples of the other hand than ``native`` ``(22, 3)`` (the system's own structure) are
    reflected first; returns the angles and the number reflected (0 for beads, which carry no Cα hand).
    """
    if tuple(int(a) for a in atoms) == ALDP_BACKBONE:
        return backbone_angles(samples, CG_PHI, CG_PSI), 0
    sign = float(chirality(torch.as_tensor(native, dtype=torch.float64)[None])[0])
    fixed, n_mirrored = match_chirality(samples.to(torch.float64), sign)
    return backbone_angles(fixed), n_mirrored


@dataclass(frozen=True)
class PhiSide:
    """One side of alanine dipeptide's φ divide, in the reference hand, as a region that SMC can be
    confined to (:class:`~boltzclf.sampling.paths.ConfinedPath`).

    ``side`` +1 is φ ∈ [0, π) (αL, C7ax), −1 the rest, split as
    :func:`~boltzclf.estimators.populations.phi_sign_free_energy` splits them; φ of a configuration of
    the other hand is read after reflection (−φ). ``coordinate`` is side · sin φ, positive inside and
    smooth across both borders (φ = 0 and φ = ±π). ``width(sigma)`` maps a noise level σ [nm] to the
    tilt's width in units of sin φ: σ / ``length_nm`` (an atom displaced by about 0.1 nm turns φ by
    about a radian), at least ``min_width``.
    """

    native_sign: float
    side: int
    length_nm: float = 0.1
    min_width: float = 0.02

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """φ ``(B,)`` [rad] in the reference hand of configurations ``(B, 22, 3)`` (differentiable)."""
        x = x.to(torch.float64)
        native_hand = chirality(x.detach()) == self.native_sign  # as match_chirality decides it
        phi = dihedral(x, torch.tensor([ALDP_PHI], device=x.device))[:, 0]
        return torch.where(native_hand, phi, -phi)

    def contains(self, x: torch.Tensor) -> torch.Tensor:
        phi = self.phi(x.detach())
        positive = (phi >= 0) & (phi < math.pi)
        return positive if self.side > 0 else ~positive

    def coordinate(self, x: torch.Tensor) -> torch.Tensor:
        return self.side * torch.sin(self.phi(x))

    def width(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma / self.length_nm).clamp_min(self.min_width)


@dataclass
class Reference:
    """A reference ensemble: angles ``(M, 2)``, true reduced energies ``(M,)`` (None for CG), ΔF ± SE (kT)
    and basin populations ``{name: fraction}``."""

    angles: np.ndarray
    energies: np.ndarray | None
    dF_phi: float
    dF_phi_se: float
    populations: dict[str, float]


def _populations_and_distance(angles: np.ndarray, log_w: np.ndarray | None, clusters: np.ndarray,
                             reference: dict[str, float]) -> tuple[dict, float, float]:
    """Basin populations ``{name: {"value", "se"}}`` of (φ, ψ) ``angles`` ``(N, 2)``, their
    total-variation distance from ``reference`` and their effective sample size n_eff."""
    summary = basin_populations(angles[:, 0], angles[:, 1], log_w, clusters).as_dict()
    populations = summary["populations"]
    tv = 0.5 * sum(abs(populations[name]["value"] - reference[name]) for name in reference)
    return populations, tv, summary["n_eff"]


def sample_metrics(reference: Reference, angles: np.ndarray, log_w: np.ndarray | None, clusters: np.ndarray,
                   energies: np.ndarray | None = None, weighted: bool = True, seed: int = 0) -> dict:
    """The metrics of one sampler's output (see the module docstring).

    Parameters
    ----------
    reference
        The reference ensemble.
    angles
        ``(N, 2)`` (φ, ψ) in radians.
    log_w
        ``(N,)`` log-weights (None: equal).
    clusters
        ``(N,)`` ids of dependent groups (ancestors, walkers) for the ΔF error bar.
    energies
        ``(N,)`` true reduced energies in kT (None: no E-W2).
    weighted
        ``ess`` is the Kish ESS/N of ``log_w`` (True) or n_eff/N of the basin populations (correlated chains).
    """
    n = angles.shape[0]
    finite = np.isfinite(log_w) if log_w is not None else np.ones(n, dtype=bool)
    lw = log_w[finite] if log_w is not None else None
    estimate = phi_sign_free_energy(angles[finite, 0], lw, clusters=clusters[finite])
    value, se = float(estimate.value), float(estimate.se)
    combined = float(np.hypot(se, reference.dF_phi_se))
    populations, tv, n_eff = _populations_and_distance(angles[finite], lw, clusters[finite], reference.populations)
    n_clusters = int(np.unique(clusters[finite]).size)
    if weighted and lw is not None:
        ess = float(effective_sample_size(torch.as_tensor(lw))) * lw.size / n
    else:  # one cluster: no spread between clusters, so no error bar and no n_eff
        ess = n_eff / n if n_clusters > 1 and math.isfinite(n_eff) else None
    return {
        "ess": ess, "n": n, "n_clusters": n_clusters,
        "n_nonfinite_weights": int((~finite).sum()),
        "e_w2": energy_w2(reference.energies, energies[finite], None, lw)
        if energies is not None and reference.energies is not None else None,
        "t_w2": torus_w2(reference.angles, angles[finite], None, lw, seed=seed),
        "dF_phi": value, "dF_phi_se": se, "dF_phi_error": value - reference.dF_phi,
        "dF_phi_z": (value - reference.dF_phi) / combined if combined > 0 else None,
        "pmf_error": pmf_error(reference.angles, angles[finite], None, lw).value,
        "populations": populations, "populations_tv": tv,
    }
