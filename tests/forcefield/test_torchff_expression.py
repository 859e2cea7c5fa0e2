"""The Lepton expression compiler against OpenMM's own expression evaluation."""
from __future__ import annotations

import re

import numpy as np
import openmm
import pytest
import torch

from boltzclf.core.errors import BoltzclfError
from boltzclf.forcefield.expression import compile_expression

EXPRESSIONS = [
    "-x^2 + 2^3^0.5*y",
    "x - y - z*2/3/4",
    "x^6 + y^5 - z^8 + z^7 + x^1.5 + y^-2",
    "select(step(x-0.1), log(y)/x, 0) + delta(z) + max(x, y) - min(y, z)",
    "0.5*(1/L-1/U+0.25*(x-z^2/x)*(1/(U^2)-1/(L^2))+0.5*log(L/U)/x); U=x+z; L=max(y, D); D=abs(x-z)",
    "a*b; a=tanh(1.2e-1*x+3*x^3); b=sqrt(y)+exp(-z)+erfc(y)+recip(x)+square(z)+cube(y)",
    "atan2(y, x) + cos(z) + sin(x) + atan(y) + cosh(z) + floor(3*y) + ceil(2*x)",
]
POINTS = [(0.3, 0.7, 0.2), (1.3, 0.25, 0.0), (0.05, 2.0, -0.4)]


def openmm_value(expression: str, point: tuple[float, float, float]) -> float:
    """Value of ``expression`` in the variables x, y, z as OpenMM's CustomExternalForce evaluates it."""
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomExternalForce(expression)
    force.addParticle(0, [])
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions([point])
    return context.getState(getEnergy=True).getPotentialEnergy()._value


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_expression_values_match_openmm(expression):
    compiled = compile_expression(expression, "test")
    points = torch.tensor(POINTS, dtype=torch.float64)
    ours = compiled.evaluate(dict(zip("xyz", points.unbind(1))))
    expected = [openmm_value(expression, p) for p in POINTS]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)


def test_constant_subexpressions_are_folded():
    compiled = compile_expression("2*x*(1/1-1/78.5)*k; k=3", "test")
    assert compiled.free_variables == {"x"}
    assert compiled.evaluate({"x": 1.0}) == pytest.approx(6 * (1 - 1 / 78.5))


@pytest.mark.parametrize("text, message", [("x*(y", "expected ')'"), ("foo(x)", "unknown function 'foo'"),
                                           ("max(x)", "takes 2 arguments"), ("x $ y", "unexpected character"),
                                           ("x; 3=y", "malformed definition")])
def test_malformed_expressions_name_the_source(text, message):
    with pytest.raises(BoltzclfError, match=f"force 7.*{re.escape(message)}"):
        compile_expression(text, "force 7")


@pytest.mark.parametrize("text, expected", [
    ("(-2)^0.5", np.float64(-2.0) ** 0.5), ("1/0", np.float64(1.0) / 0.0), ("0/0", np.float64(0.0) / 0.0),
    ("log(0)", np.log(np.float64(0.0))), ("sqrt(-1)", np.sqrt(np.float64(-1.0))), ("acos(2)", np.arccos(np.float64(2.0))),
])
def test_constants_fold_like_c_arithmetic(text, expected):
    """Folded constants follow IEEE/C semantics (NaN, ±inf), as OpenMM's Lepton does, instead of a
    complex number or a Python exception."""
    with np.errstate(all="ignore"):
        value = compile_expression(f"{text}*r", "test").evaluate({"r": torch.tensor([1.0], dtype=torch.float64)})
    np.testing.assert_equal(value.numpy(), [expected * 1.0])
