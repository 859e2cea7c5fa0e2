"""Solvation end states and λ paths on the torch force field, in kT.

Two definitions of "switching the implicit solvent off", named everywhere they are used (see
:data:`~boltzclf.forcefield.field.GB_PATHS`):

* ``gb_charges``: λ scales the charges of the generalized Born force. The polar GB energy goes as λ²
  and the charge-independent surface-area (ACE) term stays on, so λ = 0 is *not* vacuum: it is vacuum
  plus a nonpolar cavity term. This is FEAT's definition and the one the DiffCLF paper's 29.43 kT
  refers to (METHOD.md §6.5).
* ``full_gb``: λ scales the whole GB energy (polar and surface-area), so λ = 0 is the true vacuum
  system. For unconstrained ALDP at 300 K the two ΔF differ by about 7 kT.

λ = 1 is the implicit-solvent system in both. Every function takes positions ``(B, N, 3)`` in nm.
"""
from __future__ import annotations

import numpy as np
import torch

from boltzclf.core.errors import BoltzclfError
from boltzclf.forcefield.field import GB_PATHS, TorchForceField
from boltzclf.energy.units import kt_kj_per_mol

#: Smallest |u(λ=1) − u(λ=0)| [kT] at the start structure for which λ counts as changing the energy.
MIN_PATH_CHANGE_KT = 1e-6


def solvation_field(system, path: str, dtype: torch.dtype = torch.float64,
                    device: torch.device | str = "cpu") -> TorchForceField:
    """The torch force field of ``system`` (a loaded :class:`~boltzclf.openmm.MolecularSystem`) whose
    ``gb_scale`` is λ of ``path``.

    Raises
    ------
    BoltzclfError
        If ``path`` is unknown, the system has no implicit-solvent (GB) force, or λ does not change
        its energy at the spec structure (e.g. a GB force without charges); the message names the system.
    """
    if path not in GB_PATHS:
        raise BoltzclfError(f"path: {path!r} is not a solvation path (choose from {', '.join(GB_PATHS)})")
    name = system.spec.name
    field = TorchForceField(system.system, gb_path=path).to(device=device, dtype=dtype)
    if not field.gb_terms:
        forces = ", ".join(field.labels)
        raise BoltzclfError(f"{name}: has no implicit-solvent force (GBSAOBCForce or CustomGBForce; it has "
                            f"{forces}), so there is no solvation free energy to compute")
    x = torch.as_tensor(np.asarray(system.positions), dtype=dtype, device=device)[None]
    ends = reduced_energies(field, x, [0.0, 1.0], system.temperature)[:, 0]
    if not abs(float(ends[1] - ends[0])) > MIN_PATH_CHANGE_KT:
        raise BoltzclfError(f"{name}: λ of path {path} does not change the energy (u(1) − u(0) = "
                            f"{float(ends[1] - ends[0]):.3g} kT at the spec structure)")
    return field


def lambda_problem(lambdas) -> str | None:
    """Why ``lambdas`` cannot be a path's windows (None if they can): they must be finite, strictly
    increasing, in [0, 1] and include both end states."""
    values = np.asarray(lambdas, dtype=np.float64).ravel()
    if values.size < 2 or not np.isfinite(values).all():
        return f"need at least 2 finite λ values, got {values.tolist()}"
    if values.min() < 0.0 or values.max() > 1.0:
        return f"every λ must lie in [0, 1], got {values.tolist()}"
    if not (np.diff(values) > 0).all():
        return f"λ values must be strictly increasing, got {values.tolist()}"
    if values[0] != 0.0 or values[-1] != 1.0:
        return ("the windows must include both end states, λ = 0 (vacuum end) and λ = 1 (implicit solvent), "
                f"got {values.tolist()}")
    return None


@torch.no_grad()
def reduced_energies(field: TorchForceField, x: torch.Tensor, lambdas, temperature: float,
                     chunk_size: int = 4096) -> torch.Tensor:
    """u_l(x_b) = U(x_b; λ_l)/kT for every λ, ``(L, B)`` float64 in kT.

    Parameters
    ----------
    field
        Force field whose ``gb_path`` defines λ.
    x
        ``(B, N, 3)`` positions [nm] (evaluated in the field's dtype).
    lambdas
        ``(L,)`` λ values (any sequence; used as Python floats, so float32 rounding never enters).
    temperature
        K.
    """
    kT = kt_kj_per_mol(temperature)
    rows = []
    for lam in np.asarray(lambdas, dtype=np.float64).tolist():
        parts = [field(chunk, lam).to(torch.float64) for chunk in x.split(chunk_size)]
        rows.append(torch.cat(parts) / kT)
    return torch.stack(rows)


def du_dlambda(field: TorchForceField, x: torch.Tensor, lam: float | torch.Tensor, temperature: float,
               chunk_size: int = 4096) -> torch.Tensor:
    """∂u/∂λ for every sample, ``(B,)`` float64 in kT, by autograd, at λ = ``lam``: one value for all
    or one per sample ``(B,)``."""
    kT = kt_kj_per_mol(temperature)
    lam = torch.as_tensor(lam, dtype=torch.float64).expand(x.shape[0])
    out = []
    for chunk, chunk_lam in zip(x.detach().split(chunk_size), lam.split(chunk_size)):
        scale = chunk_lam.to(dtype=chunk.dtype, device=chunk.device).clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(field(chunk, scale).sum(), scale)
        out.append(grad.to(torch.float64))
    return torch.cat(out) / kT
