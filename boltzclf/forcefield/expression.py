"""OpenMM (Lepton) algebraic expressions compiled to batched torch functions.

OpenMM's custom forces carry their physics as strings such as
``"1/(1/or-tanh(psi-0.8*psi^2+4.85*psi^3)/radius); psi=I*or; radius=or+offset; offset=0.009"``:
a main expression followed by ``;``-separated definitions. :func:`compile_expression` parses that
grammar into a tree and returns an :class:`Expression` whose ``evaluate(env)`` maps variable names to
tensors (or floats) and broadcasts them, so the same compiled form runs on per-particle, per-pair
and batched ``(B, n_pairs)`` inputs alike. Sub-trees without variables are folded to constants at
compile time. Tabulated functions are supplied as callables.

Semantics follow Lepton: ``step(x) = 1 if x >= 0 else 0``, ``delta(x) = 1 if x == 0 else 0``,
``select(x, a, b) = b if x == 0 else a``, ``^`` is right-associative and binds tighter than unary
minus (``-x^2 = -(x^2)``).
"""
from __future__ import annotations

import math
import re
import itertools
from dataclasses import dataclass, field
from typing import Callable, Mapping, Union

import torch

from boltzclf.core.errors import BoltzclfError

Value = Union[torch.Tensor, float]


def _step(x: Value) -> Value:
    if isinstance(x, torch.Tensor):
        return (x >= 0).to(x.dtype)
    return 1.0 if x >= 0 else 0.0


def _delta(x: Value) -> Value:
    if isinstance(x, torch.Tensor):
        return (x == 0).to(x.dtype)
    return 1.0 if x == 0 else 0.0


def _select(x: Value, a: Value, b: Value) -> Value:
    if not any(isinstance(v, torch.Tensor) for v in (x, a, b)):
        return b if x == 0 else a
    like = next(v for v in (x, a, b) if isinstance(v, torch.Tensor))
    x, a, b = (torch.as_tensor(v, dtype=like.dtype, device=like.device) for v in (x, a, b))
    return torch.where(x != 0, a, b)


def _unary(torch_fn: Callable, math_fn: Callable) -> Callable[[Value], Value]:
    def apply(x: Value) -> Value:
        return torch_fn(x) if isinstance(x, torch.Tensor) else math_fn(x)
    return apply


def _binary(torch_fn: Callable, math_fn: Callable) -> Callable[[Value, Value], Value]:
    def apply(x: Value, y: Value) -> Value:
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            like = x if isinstance(x, torch.Tensor) else y
            return torch_fn(torch.as_tensor(x, dtype=like.dtype, device=like.device),
                            torch.as_tensor(y, dtype=like.dtype, device=like.device))
        return math_fn(x, y)
    return apply


FUNCTIONS: dict[str, tuple[int, Callable]] = {
    "sqrt": (1, _unary(torch.sqrt, math.sqrt)),
    "exp": (1, _unary(torch.exp, math.exp)),
    "log": (1, _unary(torch.log, math.log)),
    "sin": (1, _unary(torch.sin, math.sin)),
    "cos": (1, _unary(torch.cos, math.cos)),
    "tan": (1, _unary(torch.tan, math.tan)),
    "sec": (1, _unary(lambda x: 1 / torch.cos(x), lambda x: 1 / math.cos(x))),
    "csc": (1, _unary(lambda x: 1 / torch.sin(x), lambda x: 1 / math.sin(x))),
    "cot": (1, _unary(lambda x: 1 / torch.tan(x), lambda x: 1 / math.tan(x))),
    "asin": (1, _unary(torch.asin, math.asin)),
    "acos": (1, _unary(torch.acos, math.acos)),
    "atan": (1, _unary(torch.atan, math.atan)),
    "sinh": (1, _unary(torch.sinh, math.sinh)),
    "cosh": (1, _unary(torch.cosh, math.cosh)),
    "tanh": (1, _unary(torch.tanh, math.tanh)),
    "erf": (1, _unary(torch.erf, math.erf)),
    "erfc": (1, _unary(torch.erfc, math.erfc)),
    "abs": (1, _unary(torch.abs, abs)),
    "floor": (1, _unary(torch.floor, math.floor)),
    "ceil": (1, _unary(torch.ceil, math.ceil)),
    "square": (1, lambda x: x * x),
    "cube": (1, lambda x: x * x * x),
    "recip": (1, lambda x: 1 / x),
    "step": (1, _step),
    "delta": (1, _delta),
    "atan2": (2, _binary(torch.atan2, math.atan2)),
    "min": (2, _binary(torch.minimum, min)),
    "max": (2, _binary(torch.maximum, max)),
    "select": (3, _select),
}


def _power(x: Value, y: Value) -> Value:
    """``x^y``; small positive integer exponents of tensors by repeated multiplication (faster)."""
    if not isinstance(x, torch.Tensor) and not isinstance(y, torch.Tensor):
        return x ** y
    if isinstance(y, torch.Tensor) or not float(y).is_integer() or not 1 <= y <= 8:
        return x ** y
    result, square, n = None, x, int(y)
    while n:
        if n & 1:
            result = square if result is None else result * square
        n >>= 1
        if n:
            square = square * square
    return result


BINARY_OPERATORS: dict[str, Callable[[Value, Value], Value]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "^": _power,
}


_NODE_IDS = itertools.count()


@dataclass(frozen=True)
class _Node:
    """One node of a parsed expression: a constant, a variable or an operation on children."""

    kind: str  # "const" | "var" | "op" | "call"
    value: object  # float, variable name, operator symbol or function name
    children: tuple["_Node", ...] = ()
    uid: int = field(default_factory=lambda: next(_NODE_IDS), compare=False)

    def evaluate(self, env: Mapping[str, Value], tables: Mapping[str, Callable],
                 cache: dict[int, Value]) -> Value:
        """Value of this sub-tree; ``cache`` memoises shared sub-trees (definitions) by ``uid``."""
        if self.kind == "const":
            return self.value
        if self.kind == "var":
            return env[self.value]
        key = self.uid
        if key not in cache:
            args = [child.evaluate(env, tables, cache) for child in self.children]
            if self.kind == "op":
                cache[key] = -args[0] if self.value == "neg" else BINARY_OPERATORS[self.value](*args)
            elif self.value in tables:
                cache[key] = tables[self.value](*args)
            else:
                cache[key] = FUNCTIONS[self.value][1](*args)
        return cache[key]

    def variables(self) -> set[str]:
        if self.kind == "var":
            return {self.value}
        return set().union(*(child.variables() for child in self.children)) if self.children else set()


_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(.))")


def _tokenize(text: str, source: str) -> list[str]:
    tokens = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        token = next(group for group in match.groups() if group is not None)
        if token not in "+-*/^(),." and match.group(1) is None and match.group(2) is None:
            raise BoltzclfError(f"{source}: unexpected character {token!r} in expression {text!r}")
        tokens.append(token)
        position = match.end()
    return tokens


class _Parser:
    """Recursive-descent parser for one ``;``-free Lepton expression."""

    def __init__(self, text: str, source: str, definitions: Mapping[str, "_Node"],
                 table_names: frozenset[str]):
        self.text, self.source = text, source
        self.tokens = _tokenize(text, source)
        self.position = 0
        self.definitions = definitions
        self.table_names = table_names

    def fail(self, message: str) -> BoltzclfError:
        return BoltzclfError(f"{self.source}: {message} in expression {self.text!r}")

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise self.fail(f"expected {expected or 'more input'!r}, found {token!r}")
        self.position += 1
        return token

    def parse(self) -> _Node:
        node = self.sum()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()!r}")
        return node

    def sum(self) -> _Node:
        node = self.product()
        while self.peek() in ("+", "-"):
            node = _fold(_Node("op", self.take(), (node, self.product())))
        return node

    def product(self) -> _Node:
        node = self.unary()
        while self.peek() in ("*", "/"):
            node = _fold(_Node("op", self.take(), (node, self.unary())))
        return node

    def unary(self) -> _Node:
        if self.peek() == "-":
            self.take()
            return _fold(_Node("op", "neg", (self.unary(),)))
        if self.peek() == "+":
            self.take()
        return self.power()

    def power(self) -> _Node:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            return _fold(_Node("op", "^", (base, self.unary())))
        return base

    def atom(self) -> _Node:
        token = self.take()
        if token == "(":
            node = self.sum()
            self.take(")")
            return node
        if token[0].isdigit() or token[0] == ".":
            return _Node("const", float(token))
        if not (token[0].isalpha() or token[0] == "_"):
            raise self.fail(f"unexpected {token!r}")
        if self.peek() != "(":
            return self.definitions.get(token, _Node("var", token))
        return self.call(token)

    def call(self, name: str) -> _Node:
        if name not in FUNCTIONS and name not in self.table_names:
            raise self.fail(f"unknown function {name!r}")
        self.take("(")
        args = [self.sum()]
        while self.peek() == ",":
            self.take()
            args.append(self.sum())
        self.take(")")
        if name in FUNCTIONS and FUNCTIONS[name][0] != len(args):
            raise self.fail(f"{name}() takes {FUNCTIONS[name][0]} arguments, got {len(args)}")
        return _fold(_Node("call", name, tuple(args)))


def _fold(node: _Node) -> _Node:
    """Replace an operation whose children are all constants by its value."""
    if node.kind == "call" and node.value not in FUNCTIONS:
        return node
    if all(child.kind == "const" for child in node.children):
        # in float64 tensors, like OpenMM's C arithmetic: NaN or inf where Python's math would raise or
        # give a complex number ((-2)^0.5, 1/0, log(0))
        children = tuple(_Node("const", torch.tensor(c.value, dtype=torch.float64)) for c in node.children)
        return _Node("const", float(_Node(node.kind, node.value, children).evaluate({}, {}, {})))
    return node


class Expression:
    """A compiled expression; call :meth:`evaluate` with a mapping of its free variables.

    Parameters
    ----------
    text
        The Lepton expression, e.g. ``"0.5*k*(r-r0)^2; k=100"``.
    source
        Where the expression comes from (named in error messages), e.g. ``"force 4 (CustomGBForce)"``.
    table_names
        Names of tabulated functions the expression may call.
    """

    def __init__(self, text: str, source: str, table_names: frozenset[str] = frozenset()):
        self.text = text
        parts = [part.strip() for part in text.split(";")]
        if not parts[0]:
            raise BoltzclfError(f"{source}: empty expression {text!r}")
        raw_definitions: dict[str, str] = {}
        for part in parts[1:]:
            if not part:
                continue
            name, sep, body = part.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
                raise BoltzclfError(f"{source}: malformed definition {part!r} in {text!r}")
            raw_definitions.setdefault(name.strip(), body)
        definitions: dict[str, _Node] = {}
        for name in reversed(list(raw_definitions)):
            # Lepton substitutes later definitions into earlier ones.
            definitions[name] = _Parser(raw_definitions[name], source, definitions, table_names).parse()
        self.root = _Parser(parts[0], source, definitions, table_names).parse()
        self.free_variables = frozenset(self.root.variables())

    def evaluate(self, env: Mapping[str, Value], tables: Mapping[str, Callable] | None = None) -> Value:
        """Value of the expression, broadcast over the shapes of the values in ``env``."""
        return self.root.evaluate(env, tables or {}, {})


def compile_expression(text: str, source: str,
                       table_names: frozenset[str] = frozenset()) -> Expression:
    """Parse ``text`` once; see :class:`Expression`."""
    return Expression(text, source, table_names)
