"""Request bodies: one decoding path (orjson, strict UTF-8, bounded depth), 422 `invalid_json`."""

from __future__ import annotations

import json

import httpx
import pytest

from app.api.body import MAX_JSON_DEPTH, decode_json
from app.config import Settings
from tests.conftest import bearer

ROUTES = [("POST", "/api/v1/sessions"), ("POST", "/api/v1/chat")]


def _nested(depth: int) -> bytes:
    return b'{"id": "deep", "metadata": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


def test_decode_json_accepts_the_limit_depth() -> None:
    assert decode_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
        b"[" * 100_000 + b"]" * 100_000,
        b'["\\ud800", ' + b"[" * 100_000 + b"]" * 100_000 + b"]",
        b'"\xff"',
        b"[NaN]",
        b'["\\ud800", Infinity]',
        b"{not json",
    ],
    ids=[
        "limit+1",
        "deep",
        "deep-after-surrogate",
        "bad-utf8",
        "nan",
        "inf-after-surrogate",
        "syntax",
    ],
)
def test_decode_json_refuses_with_a_decode_error(raw: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        decode_json(raw)


def test_numbers_next_to_a_lone_surrogate_decode_as_orjson_reads_them() -> None:
    raw = b'["\\ud800", 123456789012345678901234567890, 18446744073709551615, 1.5]'
    assert decode_json(raw)[1:] == [1.2345678901234568e29, 18446744073709551615, 1.5]
    with pytest.raises(json.JSONDecodeError, match="infinity"):
        decode_json(b'["\\ud800", 1e400]')


def test_decode_json_keeps_escaped_lone_surrogates_for_the_fields_to_judge() -> None:
    assert decode_json(b'{"t": "a\\ud83db", "u": "\\ud83d\\ude00"}') == {
        "t": "a\ud83db",
        "u": "\U0001f600",
    }


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_json_nested_past_orjsons_limit_is_422_not_500(
    client: httpx.AsyncClient, settings: Settings, method: str, path: str
) -> None:
    response = await client.request(
        method,
        path,
        content=_nested(300),
        headers={**bearer(settings, "alice"), "content-type": "application/json"},
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_json"
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in error["message"]


async def test_invalid_utf8_body_is_422(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.post(
        "/api/v1/sessions",
        content=b'{"title": "\xff\xfe"}',
        headers={**bearer(settings, "alice"), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_json"


async def test_lone_surrogate_in_a_title_is_422_naming_the_field_not_500(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.post(
        "/api/v1/sessions",
        content=b'{"title": "half \\ud83d"}',
        headers={**bearer(settings, "alice"), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "title"


async def test_lone_surrogate_in_an_unknown_field_name_is_422_not_500(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.post(
        "/api/v1/sessions",
        content=b'{"\\ud800": 1}',
        headers={**bearer(settings, "alice"), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
