"""OpenMM's CustomGBForce evaluated in torch from its own expressions.

openmm.app builds every generalized Born model (HCT, OBC1, OBC2, GBn, GBn2 — surface-area term and
GBn neck tables included) as a :class:`openmm.CustomGBForce`; this module evaluates *those* energy
expressions (compiled by :mod:`boltzclf.forcefield.expression`), so any of them — or a user's own
— gives OpenMM's energy. Semantics, as in OpenMM's reference kernel:

* a *ParticlePair* computed value of atom ``i`` is ``Σ_{j≠i} expr(r_ij, params₁ = i, params₂ = j)``;
* a *SingleParticle* computed value or energy term is evaluated per atom (energies summed);
* a pair energy term is summed over pairs ``i < j`` with atom ``i`` as particle 1;
* *ParticlePair* skips the force's exclusions, *ParticlePairNoExclusions* does not.

Pair terms are evaluated on a dense ``(N, N, B)`` grid (particle 1 = row, batch last) with masks, not
on gathered pair lists: no index gathers or scatters in the backward pass, and, with the batch as the
contiguous axis, simple vectorised fused kernels under ``torch.compile``; memory is bounded by the
chunking of :meth:`~boltzclf.forcefield.field.TorchForceField.energy_and_force`. Per-atom values are
``(N, B)`` (or ``(N, 1)`` for parameters, broadcast along the batch).

Global parameters take their default values. The per-particle parameter named ``charge`` can be
scaled by λ (:meth:`CustomGB.forward`), which is how a GB-charge solvation path is expressed.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import openmm
import torch
from torch import nn

from boltzclf.core.errors import BoltzclfError
from boltzclf.forcefield.expression import Expression, compile_expression
from boltzclf.forcefield.grid import pair_distances

SINGLE, PAIR, PAIR_NO_EXCLUSIONS = (openmm.CustomGBForce.SingleParticle, openmm.CustomGBForce.ParticlePair,
                                    openmm.CustomGBForce.ParticlePairNoExclusions)
CHARGE_PARAMETER = "charge"


def _discrete_table(function: openmm.TabulatedFunction, label: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Values and grid sizes (x fastest) of a Discrete{1,2,3}DFunction."""
    if isinstance(function, openmm.Discrete1DFunction):
        values = function.getFunctionParameters()
        return np.asarray(values, float), (len(values),)
    if isinstance(function, openmm.Discrete2DFunction):
        xsize, ysize, values = function.getFunctionParameters()
        return np.asarray(values, float), (xsize, ysize)
    if isinstance(function, openmm.Discrete3DFunction):
        xsize, ysize, zsize, values = function.getFunctionParameters()
        return np.asarray(values, float), (xsize, ysize, zsize)
    raise BoltzclfError(f"{label}: tabulated function type {type(function).__name__} is not supported "
                        "by the torch force field (only Discrete1D/2D/3DFunction)")


def _lookup(values: torch.Tensor, sizes: tuple[int, ...]) -> Callable[..., torch.Tensor]:
    """A function of integer-valued grid coordinates (rounded, like OpenMM) returning table values."""
    strides = np.cumprod((1,) + sizes[:-1])

    def table(*coordinates: torch.Tensor) -> torch.Tensor:
        flat = sum(torch.round(torch.as_tensor(c, device=values.device)).long() * int(s)
                   for c, s in zip(coordinates, strides))
        return values[flat]
    return table


def _broadcast(value: torch.Tensor | float, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """``value`` (constant, per-atom/per-pair or batched) broadcast to ``shape`` on ``like``'s dtype/device."""
    return torch.broadcast_to(torch.as_tensor(value, dtype=like.dtype, device=like.device), shape)


class CustomGB(nn.Module):
    """Energy of a :class:`openmm.CustomGBForce` with ``NoCutoff``.

    Parameters
    ----------
    force
        The OpenMM force.
    label
        How errors name the force, e.g. ``"force 4 (CustomGBForce)"``.

    Raises
    ------
    BoltzclfError
        For cutoff methods, unsupported tabulated functions, or expressions using variables the force
        does not define.
    """

    def __init__(self, force: openmm.CustomGBForce, label: str = "CustomGBForce"):
        super().__init__()
        self.label = label
        if force.getNonbondedMethod() != openmm.CustomGBForce.NoCutoff:
            raise BoltzclfError(f"{label}: only NoCutoff is supported by the torch force field "
                                f"(got nonbonded method {force.getNonbondedMethod()})")
        n = force.getNumParticles()
        self.parameter_names = [force.getPerParticleParameterName(k)
                                for k in range(force.getNumPerParticleParameters())]
        params = np.array([force.getParticleParameters(i) for i in range(n)], float).reshape(n, -1)
        # (n_parameters, N, 1): each parameter a column that broadcasts along the batch
        self.register_buffer("params", torch.as_tensor(params.T.copy()[:, :, None]), persistent=False)
        self.globals = {force.getGlobalParameterName(k): force.getGlobalParameterDefaultValue(k)
                        for k in range(force.getNumGlobalParameters())}
        self._register_tables(force)
        self._register_pairs(force, n)
        table_names = frozenset(self.table_sizes)
        known = set(self.globals)
        self.computed: list[tuple[str, Expression, int]] = []
        for k in range(force.getNumComputedValues()):
            name, text, kind = force.getComputedValueParameters(k)
            expr = compile_expression(text, f"{label} computed value {name!r}", table_names)
            self._check_variables(expr, known, kind, f"computed value {name!r}")
            self.computed.append((name, expr, kind))
            known.add(name)
        self.terms: list[tuple[Expression, int]] = []
        for k in range(force.getNumEnergyTerms()):
            text, kind = force.getEnergyTermParameters(k)
            expr = compile_expression(text, f"{label} energy term {k}", table_names)
            self._check_variables(expr, known, kind, f"energy term {k}")
            self.terms.append((expr, kind))

    def _register_tables(self, force: openmm.CustomGBForce) -> None:
        self.table_sizes: dict[str, tuple[int, ...]] = {}
        for k in range(force.getNumTabulatedFunctions()):
            name = force.getTabulatedFunctionName(k)
            values, sizes = _discrete_table(force.getTabulatedFunction(k), f"{self.label} function {name!r}")
            self.register_buffer(f"table_{name}", torch.as_tensor(values), persistent=False)
            self.table_sizes[name] = sizes

    def _register_pairs(self, force: openmm.CustomGBForce, n: int) -> None:
        """Dense ``(N, N, 1)`` masks of the pairs each kind of term runs over."""
        excluded = np.zeros((n, n), bool)
        for k in range(force.getNumExclusions()):
            i, j = force.getExclusionParticles(k)
            excluded[i, j] = excluded[j, i] = True
        distinct = ~np.eye(n, dtype=bool)
        upper = np.triu(distinct)
        for name, mask in (("computed_mask", distinct & ~excluded), ("computed_mask_all", distinct),
                           ("energy_mask", upper & ~excluded), ("energy_mask_all", upper)):
            self.register_buffer(name, torch.as_tensor(mask[:, :, None]), persistent=False)

    def _check_variables(self, expr: Expression, known: set[str], kind: int, what: str) -> None:
        if kind == SINGLE:
            allowed = known | set(self.parameter_names) | {"x", "y", "z"}
        else:
            allowed = {"r"} | set(self.globals) | {f"{name}{s}" for name in
                                                   (known - set(self.globals)) | set(self.parameter_names)
                                                   for s in "12"}
        unknown = sorted(expr.free_variables - allowed)
        if unknown:
            raise BoltzclfError(f"{self.label} {what}: unknown variable(s) {', '.join(unknown)} in "
                                f"{expr.text!r}")

    @property
    def scalable(self) -> bool:
        """Whether the force has a per-particle ``charge`` parameter that λ can scale."""
        return CHARGE_PARAMETER in self.parameter_names

    def forward(self, xt: torch.Tensor, charge_scale: torch.Tensor | float | None = None) -> torch.Tensor:
        """Energy ``(B,)`` in kJ/mol.

        Parameters
        ----------
        xt
            Positions ``(3, n_atoms, B)`` in nm, component-first and batch-last (buffers must share
            its dtype and device).
        charge_scale
            λ multiplying the ``charge`` parameter: a float or a tensor ``(1, B)``; None for 1.
        """
        per_atom: dict[str, torch.Tensor | float] = dict(zip(self.parameter_names, self.params.unbind(0)))
        if charge_scale is not None:
            if not self.scalable:
                raise BoltzclfError(f"{self.label}: cannot scale GB charges: no per-particle parameter "
                                    f"named {CHARGE_PARAMETER!r} (has {self.parameter_names})")
            per_atom[CHARGE_PARAMETER] = per_atom[CHARGE_PARAMETER] * charge_scale
        tables = {name: _lookup(getattr(self, f"table_{name}"), sizes)
                  for name, sizes in self.table_sizes.items()}
        r = pair_distances(xt)
        n_atoms, batch = xt.shape[1], xt.shape[2]
        coordinates = dict(zip("xyz", xt.unbind(0)))
        for name, expr, kind in self.computed:
            if kind == SINGLE:
                value = expr.evaluate({**self.globals, **per_atom, **coordinates}, tables)
            else:
                mask = self.computed_mask if kind == PAIR else self.computed_mask_all
                value = self._masked(expr.evaluate(self._pair_env(per_atom, r), tables), mask, xt).sum(1)
            per_atom[name] = _broadcast(value, (n_atoms, batch), xt)
        energy = xt.new_zeros(batch)
        for expr, kind in self.terms:
            if kind == SINGLE:
                term = expr.evaluate({**self.globals, **per_atom, **coordinates}, tables)
                energy = energy + _broadcast(term, (n_atoms, batch), xt).sum(0)
            else:
                mask = self.energy_mask if kind == PAIR else self.energy_mask_all
                term = expr.evaluate(self._pair_env(per_atom, r), tables)
                energy = energy + self._masked(term, mask, xt).sum((0, 1))
        return energy

    @staticmethod
    def _masked(term: torch.Tensor | float, mask: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """Pair term ``(N, N, B)`` with entries outside ``mask`` set to zero."""
        n_atoms, batch = xt.shape[1], xt.shape[2]
        term = _broadcast(term, (n_atoms, n_atoms, batch), xt)
        return torch.where(mask, term, torch.zeros((), dtype=xt.dtype, device=xt.device))

    def _pair_env(self, per_atom: dict, r: torch.Tensor) -> dict:
        """Variables of a pair expression on the dense ``(N, N, B)`` grid: particle 1 is the row."""
        env = {**self.globals, "r": r}
        for name, value in per_atom.items():
            if isinstance(value, torch.Tensor):
                env[f"{name}1"] = value[:, None, :]
                env[f"{name}2"] = value[None, :, :]
            else:
                env[f"{name}1"] = env[f"{name}2"] = value
        return env
