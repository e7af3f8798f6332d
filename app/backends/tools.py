"""The tool registry: a decorator turns a typed Python function into a model tool.

The JSON schema comes from the signature (pydantic validates the model's arguments against
it); the first line of the docstring is the description.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

ToolFunc = Callable[..., Any] | Callable[..., Awaitable[Any]]


class ToolError(Exception):
    """A tool failed in a way the model should be told about."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A registered tool."""

    name: str
    description: str
    func: ToolFunc
    arguments: type[BaseModel]

    def schema(self) -> dict[str, Any]:
        """The Anthropic tool definition."""
        params = self.arguments.model_json_schema()
        params.pop("title", None)
        return {"name": self.name, "description": self.description, "input_schema": params}

    async def call(self, raw_input: Any) -> Any:
        """Validate the model's input and run the tool; errors become `ToolError`."""
        try:
            args = self.arguments.model_validate(raw_input if raw_input is not None else {})
        except ValidationError as exc:
            raise ToolError(
                f"invalid input for {self.name}: {exc.errors(include_url=False)}"
            ) from exc
        kwargs = {name: getattr(args, name) for name in type(args).model_fields}
        try:
            if inspect.iscoroutinefunction(self.func):
                result = await self.func(**kwargs)
            else:
                result = await asyncio.to_thread(self.func, **kwargs)
        except ToolError:
            raise
        except Exception as exc:
            raise ToolError(f"{self.name} failed: {type(exc).__name__}: {exc}") from exc
        orjson.dumps(result, default=str)  # fail here, not in the stream, if it can't be sent
        return result


class ToolRegistry:
    """Named tools available to the agent."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._schemas: list[dict[str, Any]] | None = None

    def tool(self, func: ToolFunc | None = None, *, name: str | None = None) -> Any:
        """Decorator registering `func` as a tool (usable with or without arguments)."""

        def register(f: ToolFunc) -> ToolFunc:
            tool_name = name or f.__name__
            doc = inspect.getdoc(f) or tool_name
            fields: dict[str, Any] = {}
            for param in inspect.signature(f).parameters.values():
                if param.annotation is inspect.Parameter.empty:
                    raise TypeError(f"tool {tool_name}: parameter {param.name} needs a type")
                default = ... if param.default is inspect.Parameter.empty else param.default
                fields[param.name] = (param.annotation, default)
            model = create_model(
                f"{tool_name}_input", __config__=ConfigDict(extra="forbid"), **fields
            )
            self._schemas = None
            self._tools[tool_name] = Tool(tool_name, doc.splitlines()[0], f, model)
            return f

        return register(func) if func is not None else register

    def get(self, name: str) -> Tool | None:
        """The tool called `name`, if registered."""
        return self._tools.get(name)

    def schemas(self) -> list[dict[str, Any]]:
        """Definitions of every tool, in registration order (built once per registration)."""
        if self._schemas is None:
            self._schemas = [t.schema() for t in self._tools.values()]
        return self._schemas

    def __len__(self) -> int:
        return len(self._tools)
