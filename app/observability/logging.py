"""Logging setup: one line per record, level from settings."""

from __future__ import annotations

import logging


def setup_logging(level: str) -> None:
    """Configure the root logger once."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpx2", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
