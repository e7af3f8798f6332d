"""Session cursors: only what the server issued decodes; anything else is `invalid_cursor`."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from app.errors import InvalidInput
from app.store.sessions import _decode_cursor


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def test_an_issued_cursor_decodes_to_utc() -> None:
    stamp, session_id = _decode_cursor(_cursor("2026-01-02T03:04:05+02:00|abc"))
    assert stamp == datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert session_id == "abc"


@pytest.mark.parametrize(
    "raw",
    [
        "9999-12-31T23:59:59-10:00|abc",
        "0001-01-01T00:00:00+10:00|abc",
        "2026-01-02T03:04:05|abc",
        "2026-01-02T03:04:05+00:00|a\x00b",
        "2026-01-02T03:04:05+00:00|",
        "not a date|abc",
    ],
    ids=["past-9999", "before-year-1", "naive", "nul-id", "no-id", "no-date"],
)
def test_a_forged_cursor_is_invalid_cursor(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        _decode_cursor(_cursor(raw))
    assert caught.value.code == "invalid_cursor"


def test_a_cursor_of_invalid_utf8_is_invalid_cursor() -> None:
    with pytest.raises(InvalidInput):
        _decode_cursor(base64.urlsafe_b64encode(b"\xff\xfe|x").decode())
