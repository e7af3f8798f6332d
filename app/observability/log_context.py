"""The ids a log line carries: request, user, session and turn, wherever they are known.

One context variable holds them. The request middleware (`app/api/request_ids.py`) binds the
request id (and a session id in the path), the auth dependency the user, the chat route the
session; a turn's task gets its own copy (`turn_context`) because it outlives the request that
started it, and every task it starts inherits that copy.
"""

from __future__ import annotations

import contextvars
import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LogIds:
    """What is known about the work being logged."""

    request_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    turn_id: str | None = None

    def fields(self) -> dict[str, str]:
        """The known ids, by field name."""
        return {name: value for name, value in self._pairs() if value is not None}

    def _pairs(self) -> tuple[tuple[str, str | None], ...]:
        return (
            ("request_id", self.request_id),
            ("user_id", self.user_id),
            ("session_id", self.session_id),
            ("turn_id", self.turn_id),
        )


FIELDS = tuple(field.name for field in dataclasses.fields(LogIds))
NOTHING = LogIds()
_IDS: contextvars.ContextVar[LogIds] = contextvars.ContextVar("copilot_log_ids", default=NOTHING)


def current() -> LogIds:
    """The ids of the work running now."""
    return _IDS.get()


def bind(**ids: str | None) -> contextvars.Token[LogIds]:
    """Add ids (those not None) to the current context; the token undoes it."""
    known = {name: value for name, value in ids.items() if value is not None}
    return _IDS.set(dataclasses.replace(_IDS.get(), **known))


def reset(token: contextvars.Token[LogIds]) -> None:
    """Undo a `bind`."""
    _IDS.reset(token)


def turn_context(*, session_id: str, turn_id: str, user_id: str | None) -> contextvars.Context:
    """A copy of the current context (the request's ids) with the turn's ids bound: the turn's
    task runs in it, so its lines and those of every task it starts name the turn."""
    context = contextvars.copy_context()
    context.run(bind, session_id=session_id, turn_id=turn_id, user_id=user_id or None)
    return context


def detached() -> contextvars.Context:
    """A context without ids, for a replica-wide task that a turn happens to start."""
    context = contextvars.copy_context()
    context.run(_IDS.set, NOTHING)
    return context
