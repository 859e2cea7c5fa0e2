"""Terms over small atom tuples (bonds, angles, torsions) with analytic derivatives.

An :class:`AnalyticTerm` sums an energy over ``n_terms`` tuples of ``k`` atoms. Its subclasses give
the energy of each tuple and, in closed form, the energy's gradient with respect to each of the
tuple's atoms; :class:`_AnalyticEnergy` makes that gradient the term's autograd backward. Forces still
come from :func:`torch.autograd.grad`, but the backward pass is one fused elementwise loop and one
gather per atom (:meth:`AtomSelection.accumulate`), where differentiating the energy's expression
graph took a chain of loops over saved intermediates. Under ``torch.compile`` (float32, 2 CPU threads,
1024 alanine-dipeptide samples, energy and forces) the bonds, angles and torsions together took
1.5 ms, against 6.1 ms with autograd through their expressions.

The backward recomputes the geometry from the saved positions instead of saving intermediates (under
``torch.compile`` it fuses into the same loop; in eager mode it costs a second pass) and is written in
differentiable torch operations, so second derivatives (``create_graph=True``) are exact too.

Positions come component-first and batch-last, ``(3, n_atoms, B)`` in nm (see
:mod:`boltzclf.forcefield.field`); per-tuple parameters are ``(n_terms, 1)`` columns that broadcast
along the batch and must share the positions' dtype and device (the force field moves them).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from boltzclf.forcefield.gather import AtomSelection

Positions = tuple[torch.Tensor, ...]


class AnalyticTerm(nn.Module):
    """Energy ``(B,)`` in kJ/mol summed over atom tuples, with an analytic gradient.

    Subclasses define :meth:`energies` and :meth:`gradients` as static methods.

    Parameters
    ----------
    atoms
        Atom indices ``(n_terms, k)`` of the tuples.
    n_atoms
        Number of atoms N of the system.
    **parameters
        Per-tuple parameters ``(n_terms,)``, in the order :meth:`energies` takes them; each is stored
        as an ``(n_terms, 1)`` buffer of that name.
    """

    def __init__(self, atoms: np.ndarray, n_atoms: int, **parameters: np.ndarray):
        super().__init__()
        self.atoms = AtomSelection(atoms, n_atoms)
        self.parameter_names = tuple(parameters)
        for name, values in parameters.items():
            column = torch.as_tensor(np.asarray(values, dtype=float).reshape(-1, 1).copy())
            self.register_buffer(name, column, persistent=False)

    @staticmethod
    def energies(positions: Positions, *parameters: torch.Tensor) -> torch.Tensor:
        """Energy ``(n_terms, B)`` of each tuple, from its atoms' positions (``k`` × ``(3, n_terms, B)``)."""
        raise NotImplementedError

    @staticmethod
    def gradients(positions: Positions, *parameters: torch.Tensor) -> Positions:
        """``∂E/∂p`` of each tuple's energy with respect to each of its ``k`` atoms, ``(3, n_terms, B)``."""
        raise NotImplementedError

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        """Energy ``(B,)`` in kJ/mol of positions ``xt`` ``(3, n_atoms, B)`` in nm."""
        parameters = [getattr(self, name) for name in self.parameter_names]
        return _AnalyticEnergy.apply(xt, self.atoms, type(self), *parameters)


class _AnalyticEnergy(torch.autograd.Function):
    """``Σ energies(selected atoms)`` with the backward ``Σ_atoms grad_out · gradients`` (module doc)."""

    @staticmethod
    def forward(xt: torch.Tensor, atoms: AtomSelection, law: type[AnalyticTerm],
                *parameters: torch.Tensor) -> torch.Tensor:
        return law.energies(atoms.select(xt), *parameters).sum(0)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        xt, ctx.atoms, ctx.law, *parameters = inputs
        ctx.save_for_backward(xt, *parameters)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xt, *parameters = ctx.saved_tensors
        per_atom = ctx.law.gradients(ctx.atoms.select(xt), *parameters)
        gradient = ctx.atoms.accumulate([g * grad for g in per_atom])
        return (gradient, None, None) + (None,) * len(parameters)
