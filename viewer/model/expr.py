"""User expressions over recorded values: a checked subset of Python expressions.

An expression may use names (recorded fields), literals, arithmetic,
comparisons, ``and``/``or``/``not``, ``x if c else y``, subscripts, attributes
that do not start with ``_``, comprehensions and generator expressions, and
calls of the functions in ``FUNCTIONS`` and of the read-only methods in
``METHODS``. Anything else (a lambda, an assignment, a call of anything else,
a private attribute) is refused when the expression is compiled, with a
``ValueError`` that says what.
"""

from __future__ import annotations

import ast
from typing import Any, Mapping

FUNCTIONS: dict[str, Any] = {
    f.__name__: f for f in (abs, all, any, bool, float, int, len, list, max, min, round, set,
                            sorted, str, sum, tuple)}

METHODS = frozenset({"count", "endswith", "get", "index", "items", "keys", "lower", "startswith",
                     "strip", "upper", "values"})  # read-only methods an expression may call

_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is,
    ast.IsNot, ast.IfExp, ast.Name, ast.Load, ast.Store, ast.Constant, ast.Subscript, ast.Slice,
    ast.Attribute, ast.Call, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.GeneratorExp,
    ast.ListComp, ast.SetComp, ast.comprehension,
)


class Record(dict):
    """A dict whose keys read as attributes too (``m.amount`` for ``m["amount"]``)."""

    __slots__ = ()

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def as_record(value):
    """``value`` with every dict in it made a ``Record``."""
    if isinstance(value, dict):
        return Record((k, as_record(v)) for k, v in value.items())
    if isinstance(value, list):
        return [as_record(v) for v in value]
    return value


class Expr:
    """A compiled, checked expression; ``names`` are the free names it reads."""

    __slots__ = ("text", "code", "names")

    def __init__(self, text: str):
        text = text.strip()
        if not text:
            raise ValueError("empty expression")
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise ValueError(f"not an expression: {text!r} ({exc.msg})") from None
        bound: set[str] = set()
        used: set[str] = set()
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED):
                raise ValueError(f"not allowed in an expression: {type(node).__name__} in {text!r}")
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                raise ValueError(f"private attribute {node.attr!r} in {text!r}")
            if isinstance(node, ast.Call) and not (
                    (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS)
                    or (isinstance(node.func, ast.Attribute) and node.func.attr in METHODS)):
                raise ValueError(f"only these functions can be called: {', '.join(sorted(FUNCTIONS))}"
                                 f", and the methods {', '.join(sorted(METHODS))} (in {text!r})")
            if isinstance(node, ast.Name):
                if node.id.startswith("__"):
                    raise ValueError(f"name {node.id!r} not allowed in {text!r}")
                (bound if isinstance(node.ctx, ast.Store) else used).add(node.id)
        self.text = text
        self.code = compile(tree, "<expression>", "eval")
        self.names = frozenset(used - bound - set(FUNCTIONS))

    def evaluate(self, values: Mapping[str, Any]):
        """The expression's value with ``values`` as its names (a missing one: NameError)."""
        scope = dict(FUNCTIONS)
        scope.update(values)
        scope["__builtins__"] = {}
        return eval(self.code, scope)

    def __repr__(self) -> str:
        return f"Expr({getattr(self, 'text', '')!r})"
