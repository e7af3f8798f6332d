"""What turns on this replica share, built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from app.turns.registry import TurnRegistry
from app.turns.runner import TurnServices
from app.turns.titles import TitleWriter


@dataclass
class TurnContext:
    """The turn machinery of this replica."""

    services: TurnServices
    registry: TurnRegistry
    replica_id: str
    titles: TitleWriter | None
