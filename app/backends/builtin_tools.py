"""Tools that ship with the server."""

from __future__ import annotations

import ast
import operator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.backends.tools import ToolError, ToolRegistry

_OPERATORS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 100:
            raise ToolError("exponent too large")
        return float(_OPERATORS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return float(_OPERATORS[type(node.op)](_evaluate(node.operand)))
    raise ToolError("only numbers and + - * / // % ** ( ) are allowed")


def register_builtin_tools(registry: ToolRegistry) -> None:
    """Add the built-in tools to `registry`."""

    @registry.tool
    def get_current_time(timezone: str = "UTC") -> dict[str, str]:
        """Current date and time in an IANA time zone (e.g. Europe/Paris)."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ToolError(f"unknown time zone {timezone!r}") from exc
        now = datetime.now(zone)
        return {
            "timezone": timezone,
            "iso": now.isoformat(timespec="seconds"),
            "weekday": now.strftime("%A"),
        }

    @registry.tool
    def calculate(expression: str) -> dict[str, float | str]:
        """Evaluate an arithmetic expression exactly as written, e.g. (2 + 3) * 4 / 7."""
        if len(expression) > 200:
            raise ToolError("expression longer than 200 characters")
        try:
            tree = ast.parse(expression, mode="eval")
        except SyntaxError as exc:
            raise ToolError(f"not an arithmetic expression: {exc.msg}") from exc
        try:
            return {"expression": expression, "result": _evaluate(tree)}
        except ZeroDivisionError as exc:
            raise ToolError("division by zero") from exc
