"""The torch force field: an OpenMM System's potential energy, batched and differentiable.

:class:`TorchForceField` is built once from an :class:`openmm.System` and maps positions
``(B, n_atoms, 3)`` in nm to potential energies ``(B,)`` in kJ/mol, on whatever device and in
whatever floating dtype the positions come (float64 for reference accuracy, float32 for speed).
Forces come from autograd; the bonded terms and the grid of pair distances supply closed-form backward
passes (:mod:`~boltzclf.forcefield.analytic`, :mod:`~boltzclf.forcefield.grid`), which keep the
compiled backward pass short. Supported forces: HarmonicBondForce, HarmonicAngleForce,
PeriodicTorsionForce, NonbondedForce (NoCutoff), GBSAOBCForce and CustomGBForce (NoCutoff);
CMMotionRemover is ignored; anything else is refused by name.

Internally every term works on positions laid out component-first and batch-last, ``(3, n_atoms,
B)``: each elementwise operation then runs along a contiguous batch axis (long aligned SIMD loops on
CPU, coalesced loads on CUDA), and per-atom parameters are ``(n, 1)`` columns that broadcast along it.
With ``(B, n_atoms, 3)`` the contiguous axis is a handful of atoms and the kernels that
:func:`torch.compile` generates are much slower (alanine dipeptide's GB term, energy and gradient,
float32, 2 CPU threads: 37 ms per 1024 samples against 3.9 ms batch-last).

Solvation paths: ``gb_scale`` (λ) switches the implicit solvent on and off in one of two ways, named by
``gb_path`` (see :data:`GB_PATHS`): ``"gb_charges"`` multiplies the charges used by the GB forces only (not
the NonbondedForce), matching an OpenMM system whose GB-force charges are scaled by λ, so the
charge-independent surface-area term stays on at λ = 0; ``"full_gb"`` multiplies the whole GB energy by λ,
so λ = 0 is the true vacuum system.
"""
from __future__ import annotations

import logging
from typing import Callable

import openmm
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from boltzclf.core.errors import BoltzclfError
from boltzclf.forcefield.bonded import HarmonicAngles, HarmonicBonds, PeriodicTorsions
from boltzclf.forcefield.customgb import CustomGB
from boltzclf.forcefield.nonbonded import Nonbonded
from boltzclf.forcefield.obc import obc_as_custom_gb

logger = logging.getLogger(__name__)

IGNORED_FORCES = ("CMMotionRemover",)

#: Meaning of the GB scale λ: scale the GB charges (surface-area term stays on) or the whole GB energy.
GB_PATHS = ("gb_charges", "full_gb")

_BUILDERS: dict[type, Callable[[openmm.Force, str, int], nn.Module]] = {
    openmm.HarmonicBondForce: lambda force, label, n_atoms: HarmonicBonds(force, n_atoms),
    openmm.HarmonicAngleForce: lambda force, label, n_atoms: HarmonicAngles(force, n_atoms),
    openmm.PeriodicTorsionForce: lambda force, label, n_atoms: PeriodicTorsions(force, n_atoms),
    openmm.NonbondedForce: lambda force, label, n_atoms: Nonbonded(force, label),
    openmm.CustomGBForce: lambda force, label, n_atoms: CustomGB(force, label),
    openmm.GBSAOBCForce: lambda force, label, n_atoms: CustomGB(obc_as_custom_gb(force, label), label),
}

#: Default number of (atom × atom × sample) elements evaluated at once by :meth:`energy_and_force`,
#: per device type: on CPU the working set of a chunk should stay near the caches, on CUDA a chunk
#: should fill the GPU (about 2 GB of float64 temporaries in eager mode at most).
DEFAULT_CHUNK_ELEMENTS = {"cpu": 2**19, "cuda": 2**22}


def _build_term(force: openmm.Force, label: str, n_atoms: int) -> nn.Module:
    builder = _BUILDERS.get(type(force))
    if builder is None:
        supported = ", ".join(sorted(cls.__name__ for cls in _BUILDERS))
        raise BoltzclfError(f"{label}: {type(force).__name__} is not supported by the torch force field "
                            f"(supported: {supported}; ignored: {', '.join(IGNORED_FORCES)})")
    return builder(force, label, n_atoms)


class TorchForceField(nn.Module):
    """Potential energy of an OpenMM System in torch.

    Parameters
    ----------
    system
        A non-periodic :class:`openmm.System` without virtual sites.
    gb_path
        What ``gb_scale`` (λ) scales, one of :data:`GB_PATHS`: the GB charges (default) or the whole
        GB energy.

    Attributes
    ----------
    system
        The System it was built from (kept to build copies for other devices and dtypes).
    labels
        ``"<index>:<ForceClass>"`` of each evaluated force, in system order.
    groups
        OpenMM force group of each evaluated force.

    Raises
    ------
    BoltzclfError
        For periodic systems, virtual sites, unsupported forces or unsupported force options.
    """

    def __init__(self, system: openmm.System, gb_path: str = "gb_charges"):
        super().__init__()
        if gb_path not in GB_PATHS:
            raise BoltzclfError(f"gb_path: {gb_path!r} is not one of {', '.join(GB_PATHS)}")
        self.gb_path = gb_path
        if system.usesPeriodicBoundaryConditions():
            raise BoltzclfError("system uses periodic boundary conditions, which the torch force field "
                                "does not support; use the OpenMM backend")
        virtual = [i for i in range(system.getNumParticles()) if system.isVirtualSite(i)]
        if virtual:
            raise BoltzclfError(f"system has virtual sites (particles {virtual[:5]}...), which the torch "
                                "force field does not support; use the OpenMM backend")
        self.system = system
        self.n_atoms = system.getNumParticles()
        self.labels: list[str] = []
        self.groups: list[int] = []
        terms = []
        for index, force in enumerate(system.getForces()):
            name = type(force).__name__
            if name in IGNORED_FORCES:
                continue
            label = f"{index}:{name}"
            terms.append(_build_term(force, f"force {label}", self.n_atoms))
            self.labels.append(label)
            self.groups.append(force.getForceGroup())
        self.terms = nn.ModuleList(terms)
        self.gb_terms = [i for i, term in enumerate(terms) if isinstance(term, CustomGB)]
        self._converted: dict[tuple[torch.device, torch.dtype], TorchForceField] = {}
        self._compiled: Callable | None = None
        logger.debug("torch force field with %d atoms: %s", self.n_atoms, ", ".join(self.labels))

    # -- device and dtype follow the input -------------------------------------------------------
    def _matching(self, x: torch.Tensor) -> "TorchForceField":
        """This force field with its buffers on ``x``'s device and dtype (converted copies cached)."""
        if not torch.is_floating_point(x):
            raise BoltzclfError(f"positions must be a floating-point tensor, got {x.dtype}")
        if x.ndim != 3 or x.shape[1:] != (self.n_atoms, 3):
            raise BoltzclfError(f"positions must have shape (B, {self.n_atoms}, 3) in nm, "
                                f"got {tuple(x.shape)}")
        reference = next((b for b in self.buffers() if torch.is_floating_point(b)), None)
        if reference is None or (reference.device == x.device and reference.dtype == x.dtype):
            return self
        key = (x.device, x.dtype)
        if key not in self._converted:
            self._converted[key] = TorchForceField(self.system, self.gb_path).to(device=x.device, dtype=x.dtype)
        return self._converted[key]

    def _scale(self, gb_scale: torch.Tensor | float | None, x: torch.Tensor):
        """λ as the GB terms take it: None, a float, or a ``(1, B)`` row for ``x`` ``(B, N, 3)``."""
        if gb_scale is None:
            return None
        if not self.gb_terms:
            raise BoltzclfError("gb_scale was given but the system has no generalized Born force "
                                "(GBSAOBCForce or CustomGBForce)")
        if isinstance(gb_scale, torch.Tensor) and gb_scale.ndim > 0:
            if gb_scale.shape != (x.shape[0],):
                raise BoltzclfError(f"gb_scale must be a float or a tensor of shape ({x.shape[0]},), "
                                    f"got {tuple(gb_scale.shape)}")
            return gb_scale.to(device=x.device, dtype=x.dtype)[None, :]
        return gb_scale

    # -- energies ---------------------------------------------------------------------------------
    def force_energies(self, x: torch.Tensor,
                       gb_scale: torch.Tensor | float | None = None) -> dict[str, torch.Tensor]:
        """Energy of each force, ``{label: (B,)}`` in kJ/mol, for positions ``x`` ``(B, N, 3)`` in nm.

        ``gb_scale`` (λ) scales the GB charges or the GB energy (``gb_path``): a float, or a tensor
        ``(B,)`` for one λ per sample (differentiable, so ``∂U/∂λ`` is available by autograd). None
        leaves them unscaled.
        """
        field = self._matching(x)
        return dict(zip(field.labels, field._term_energies(component_first(x), field._scale(gb_scale, x))))

    def group_energies(self, x: torch.Tensor,
                       gb_scale: torch.Tensor | float | None = None) -> dict[int, torch.Tensor]:
        """Energy of each OpenMM force group, ``{group: (B,)}`` in kJ/mol (see :meth:`force_energies`)."""
        totals: dict[int, torch.Tensor] = {}
        for group, energy in zip(self.groups, self.force_energies(x, gb_scale).values()):
            totals[group] = totals[group] + energy if group in totals else energy
        return totals

    def forward(self, x: torch.Tensor, gb_scale: torch.Tensor | float | None = None,
                chunk_size: int | None = None) -> torch.Tensor:
        """Total potential energy ``(B,)`` in kJ/mol of positions ``x`` ``(B, N, 3)`` in nm.

        Differentiable (to any order) in ``x`` and ``gb_scale``. A batch larger than ``chunk_size``
        (default as in :meth:`energy_and_force`) is evaluated in chunks; while autograd records,
        each chunk runs under activation checkpointing (:func:`torch.utils.checkpoint.checkpoint`),
        so the pairwise temporaries (about 56·N²·8 bytes per sample in float64) are kept for one
        chunk at a time and recomputed during the backward pass.
        """
        field = self._matching(x)
        scale = field._scale(gb_scale, x)
        chunk_size = chunk_size or self.default_chunk_size(x)
        if x.shape[0] <= chunk_size:
            return field._total(component_first(x), scale)

        def chunk_energy(xc: torch.Tensor, sc: torch.Tensor | float | None) -> torch.Tensor:
            return field._total(component_first(xc), sc)

        energies = []
        for start in range(0, x.shape[0], chunk_size):
            stop = start + chunk_size
            sc = scale[:, start:stop] if isinstance(scale, torch.Tensor) and scale.ndim == 2 else scale
            if torch.is_grad_enabled():
                energies.append(checkpoint(chunk_energy, x[start:stop], sc, use_reentrant=False))
            else:
                energies.append(chunk_energy(x[start:stop], sc))
        return torch.cat(energies)

    def default_chunk_size(self, x: torch.Tensor) -> int:
        """Samples per chunk for ``x``'s device: the power of two nearest below
        ``DEFAULT_CHUNK_ELEMENTS[device type] / N²`` (powers of two let compiled chunks share a shape)."""
        elements = DEFAULT_CHUNK_ELEMENTS.get(x.device.type, DEFAULT_CHUNK_ELEMENTS["cpu"])
        return 1 << max(0, (elements // self.n_atoms**2).bit_length() - 1)

    def energy_and_force(self, x: torch.Tensor, gb_scale: torch.Tensor | float | None = None,
                         chunk_size: int | None = None,
                         compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies ``(B,)`` in kJ/mol and forces ``-∇U`` ``(B, N, 3)`` in kJ/mol/nm, without a graph.

        Parameters
        ----------
        x
            Positions ``(B, N, 3)`` in nm.
        gb_scale
            GB scale λ: a float or a ``(B,)`` tensor (see :meth:`force_energies`).
        chunk_size
            Samples evaluated at once (default: :meth:`default_chunk_size`), which bounds memory at
            large ``B``.
        compiled
            Evaluate through :func:`torch.compile` (fused, vectorised kernels: several times faster
            on CPU and CUDA after a one-off compilation of tens of seconds per chunk shape, cached on
            disk by torch). Chunks are padded to a power of two (at most ``chunk_size``) so that only
            a few shapes are ever compiled.
        """
        chunk_size = chunk_size or self.default_chunk_size(x)
        field = self._matching(x)
        if gb_scale is not None:  # one λ per sample, split with the chunks (a new λ never recompiles)
            gb_scale = torch.as_tensor(gb_scale, dtype=x.dtype, device=x.device)
            gb_scale = gb_scale.expand(x.shape[0]) if gb_scale.ndim == 0 else gb_scale
        evaluate = field._compiled_total() if compiled else field._total
        x = x.detach()
        energies, forces = [], []
        for start in range(0, x.shape[0], chunk_size):
            chunk = x[start:start + chunk_size]
            scale = gb_scale[start:start + chunk_size] if gb_scale is not None else None
            size = chunk.shape[0]
            if compiled:
                chunk, scale = _pad(chunk, scale, min(chunk_size, 1 << (size - 1).bit_length()))
            xt = component_first(chunk).requires_grad_(True)
            with torch.enable_grad():
                energy = evaluate(xt, field._scale(scale, chunk))
                (gradient,) = torch.autograd.grad(energy.sum(), xt)
            energies.append(energy.detach()[:size])
            forces.append(-gradient.permute(2, 1, 0)[:size])
        if len(energies) == 1:
            return energies[0], forces[0]
        return torch.cat(energies), torch.cat(forces)

    def _term_energies(self, xt: torch.Tensor, scale: torch.Tensor | float | None) -> list[torch.Tensor]:
        """Energy ``(B,)`` of each term for positions ``xt`` ``(3, N, B)``; ``scale`` as from :meth:`_scale`."""
        return [self._gb_energy(term, xt, scale) if index in self.gb_terms else term(xt)
                for index, term in enumerate(self.terms)]

    def _gb_energy(self, term: nn.Module, xt: torch.Tensor, scale: torch.Tensor | float | None) -> torch.Tensor:
        """Energy ``(B,)`` of a GB term at scale λ (a float or ``(1, B)`` row), as ``gb_path`` defines it."""
        if scale is None or self.gb_path == "gb_charges":
            return term(xt, scale)
        return term(xt) * (scale[0] if isinstance(scale, torch.Tensor) else scale)

    def _total(self, xt: torch.Tensor, scale: torch.Tensor | float | None) -> torch.Tensor:
        """Total energy ``(B,)`` for positions ``xt`` ``(3, N, B)`` (the function that is compiled)."""
        energies = self._term_energies(xt, scale)
        return sum(energies[1:], energies[0]) if energies else xt.new_zeros(xt.shape[2])

    def _compiled_total(self) -> Callable:
        # The layout change stays outside the compiled graph: inductor (torch 2.13, CPU, several
        # threads) miscompiles the backward of index_select after an in-graph permute, giving wrong
        # forces or heap corruption; tests/forcefield/test_torchff_numerics.py guards this.
        if self._compiled is None:
            self._compiled = torch.compile(self._total, dynamic=False)
        return self._compiled


def component_first(x: torch.Tensor) -> torch.Tensor:
    """Positions ``(B, N, 3)`` as the contiguous ``(3, N, B)`` layout that the terms work on."""
    return x.permute(2, 1, 0).contiguous()


def _pad(x: torch.Tensor, scale: torch.Tensor | None,
         size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Repeat the last sample of ``x`` (and ``scale``) until the batch has ``size`` samples."""
    missing = size - x.shape[0]
    if missing <= 0:
        return x, scale
    x = torch.cat([x, x[-1:].expand(missing, *x.shape[1:])])
    if scale is not None:
        scale = torch.cat([scale, scale[-1:].expand(missing)])
    return x, scale
