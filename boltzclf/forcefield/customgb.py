"""OpenMM's CustomGBForce evaluated in torch from its own expressions.

openmm.app builds every generalized Born model (HCT, OBC1, OBC2, GBn, GBn2 — surface-area term and
GBn neck tables included) as a :class:`openmm.CustomGBForce`; this module evaluates *those* energy
expressions (compiled by :mod:`boltzclf.forcefield.expression`), so any of them — or a user's own
— gives OpenMM's energy. Semantics, as in OpenMM's reference kernel:

* a *ParticlePair* computed value of atom ``i`` is ``Σ_{j≠i} expr(r_ij, params₁ = i, params₂ = j)``;
* a *SingleParticle* computed value or energy term is evaluated per atom (energies summed);
* a pair energy term is summed over pairs ``i < j`` with atom ``i`` as particle 1;
* *ParticlePair* skips the force's exclusions, *ParticlePairNoExclusions* does not.

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
from boltzclf.forcefield.pairs import pair_distances, unordered_pairs

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


def _broadcast(value: torch.Tensor | float, shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """``value`` (constant, per-atom/per-pair or batched) broadcast to ``shape`` on ``like``'s dtype/device."""
    return torch.broadcast_to(torch.as_tensor(value, dtype=like.dtype, device=like.device), shape)


def _pick(value: torch.Tensor | float, index: torch.Tensor) -> torch.Tensor | float:
    """Per-atom ``value`` (``(N,)`` or ``(B, N)``) at atoms ``index``; constants pass through."""
    return value[..., index] if isinstance(value, torch.Tensor) else value


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
        self.register_buffer("params", torch.as_tensor(params), persistent=False)
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
        pairs = unordered_pairs(n)
        excluded = np.zeros((n, n), bool)
        for k in range(force.getNumExclusions()):
            i, j = force.getExclusionParticles(k)
            excluded[i, j] = excluded[j, i] = True
        included = np.flatnonzero(~excluded[pairs[:, 0], pairs[:, 1]])
        for name, array in (("first", pairs[:, 0]), ("second", pairs[:, 1]), ("included", included)):
            self.register_buffer(name, torch.as_tensor(array), persistent=False)
        self.has_exclusions = len(included) < len(pairs)

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

    def forward(self, x: torch.Tensor, charge_scale: torch.Tensor | float | None = None) -> torch.Tensor:
        """Energy ``(B,)`` in kJ/mol.

        Parameters
        ----------
        x
            Positions ``(B, n_atoms, 3)`` in nm (buffers must share its dtype and device).
        charge_scale
            λ multiplying the ``charge`` parameter: a float or a tensor ``(B, 1)``; None for 1.
        """
        per_atom: dict[str, torch.Tensor | float] = dict(zip(self.parameter_names, self.params.unbind(1)))
        if charge_scale is not None:
            if not self.scalable:
                raise BoltzclfError(f"{self.label}: cannot scale GB charges: no per-particle parameter "
                                    f"named {CHARGE_PARAMETER!r} (has {self.parameter_names})")
            per_atom[CHARGE_PARAMETER] = per_atom[CHARGE_PARAMETER] * charge_scale
        tables = {name: _lookup(getattr(self, f"table_{name}"), sizes)
                  for name, sizes in self.table_sizes.items()}
        r_all = pair_distances(x, self.first, self.second)
        batch, n_atoms = x.shape[0], x.shape[1]
        coordinates = dict(zip("xyz", x.unbind(-1)))
        for name, expr, kind in self.computed:
            if kind == SINGLE:
                value = expr.evaluate({**self.globals, **per_atom, **coordinates}, tables)
            else:
                first, second, r = self._pairs(kind, r_all)
                first, second = torch.cat([first, second]), torch.cat([second, first])
                env = self._pair_env(per_atom, first, second, torch.cat([r, r], dim=1))
                contribution = _broadcast(expr.evaluate(env, tables), (batch, len(first)), x)
                value = x.new_zeros(batch, n_atoms).index_add(1, first, contribution)
            per_atom[name] = _broadcast(value, (batch, n_atoms), x)
        energy = x.new_zeros(batch)
        for expr, kind in self.terms:
            if kind == SINGLE:
                term = expr.evaluate({**self.globals, **per_atom, **coordinates}, tables)
                energy = energy + _broadcast(term, (batch, n_atoms), x).sum(-1)
            else:
                first, second, r = self._pairs(kind, r_all)
                term = expr.evaluate(self._pair_env(per_atom, first, second, r), tables)
                energy = energy + _broadcast(term, (batch, len(first)), x).sum(-1)
        return energy

    def _pairs(self, kind: int, r_all: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Atom indices and distances of the pairs a term of ``kind`` runs over (exclusions honoured)."""
        if kind == PAIR_NO_EXCLUSIONS or not self.has_exclusions:
            return self.first, self.second, r_all
        return self.first[self.included], self.second[self.included], r_all[:, self.included]

    def _pair_env(self, per_atom: dict, first: torch.Tensor, second: torch.Tensor,
                  r: torch.Tensor) -> dict:
        env = {**self.globals, "r": r}
        for name, value in per_atom.items():
            if name in self.globals or name in ("x", "y", "z"):
                continue
            env[f"{name}1"] = _pick(value, first)
            env[f"{name}2"] = _pick(value, second)
        return env
