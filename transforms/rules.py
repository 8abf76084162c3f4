"""A small, validated rule language for segments (DOMAIN §8.3), compiled to polars expressions — never to SQL.

    abc_revenue == 'A' and tenure_years > 5 and is_growing and satisfaction >= 8 and industry in ['transport']

Grammar: ``and`` / ``or`` / ``not``, comparisons ``== != < <= > >= in  not in`` between a column and a
constant (string, number, True/False/None, or a list of them), and bare boolean columns. Anything else —
function calls, attribute access, arithmetic, unknown columns — is refused with a message naming the rule
and the problem. Parsing uses Python's ``ast`` module only to read the text; nothing is evaluated.

A missing value (null) makes a comparison false, as in Python where None is not 'A' and not above 5; the
negations are negations of those: ``x != 'A'`` is ``not x == 'A'`` and ``x not in [...]`` is
``not x in [...]``, so a client whose industry is unknown is ``!= 'retail'`` and ``not in ['retail']``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

import polars as pl


class RuleError(ValueError):
    """A rule that is not in the language, or names an unknown column."""


_COMPARE = {ast.Eq: "__eq__", ast.Lt: "__lt__", ast.LtE: "__le__", ast.Gt: "__gt__",
            ast.GtE: "__ge__"}


def _constant(node: ast.AST, rule: str) -> object:
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, str | int | float | bool)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, int | float):
        return -node.operand.value
    if isinstance(node, ast.List | ast.Tuple):
        return [_constant(item, rule) for item in node.elts]
    raise RuleError(f"rule {rule!r}: expected a constant (text in quotes, a number, True/False/None or a list), "
                    f"got {ast.unparse(node)!r}")


def compile_rule(rule: str, columns: Iterable[str]) -> pl.Expr:
    """The rule as a boolean polars expression; nulls count as 'does not match'."""
    allowed = set(columns)
    try:
        tree = ast.parse(rule, mode="eval")
    except SyntaxError as exc:
        raise RuleError(f"rule {rule!r}: not a valid expression ({exc.msg})") from None

    def column(node: ast.AST) -> pl.Expr:
        if not isinstance(node, ast.Name):
            raise RuleError(f"rule {rule!r}: expected a column name, got {ast.unparse(node)!r}")
        if node.id not in allowed:
            raise RuleError(f"rule {rule!r}: unknown column {node.id!r}; known columns: {', '.join(sorted(allowed))}")
        return pl.col(node.id)

    def walk(node: ast.AST) -> pl.Expr:
        if isinstance(node, ast.BoolOp):
            parts = [walk(v) for v in node.values]
            return pl.all_horizontal(parts) if isinstance(node.op, ast.And) else pl.any_horizontal(parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ~walk(node.operand).fill_null(False)
        if isinstance(node, ast.Name):
            return column(node).cast(pl.Boolean)
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                raise RuleError(f"rule {rule!r}: write chained comparisons with 'and' ({ast.unparse(node)!r})")
            left, op, right = column(node.left), node.ops[0], _constant(node.comparators[0], rule)
            if isinstance(op, ast.In | ast.NotIn):
                if not isinstance(right, list):
                    raise RuleError(f"rule {rule!r}: 'in' needs a list, e.g. industry in ['transport', 'retail']")
                matched = left.is_in(right).fill_null(False)
                return ~matched if isinstance(op, ast.NotIn) else matched
            if right is None:
                if isinstance(op, ast.Eq | ast.NotEq):
                    return left.is_null() if isinstance(op, ast.Eq) else left.is_not_null()
                raise RuleError(f"rule {rule!r}: only == and != compare with None")
            if isinstance(op, ast.NotEq):
                return ~(left == right).fill_null(False)
            if type(op) not in _COMPARE:
                raise RuleError(f"rule {rule!r}: operator {ast.unparse(node)!r} is not supported")
            return getattr(left, _COMPARE[type(op)])(right)
        raise RuleError(f"rule {rule!r}: {ast.unparse(node)!r} is not allowed (use columns, constants, "
                        "comparisons, and/or/not)")

    return walk(tree.body).fill_null(False)
