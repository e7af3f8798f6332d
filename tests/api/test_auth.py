"""Authentication: JWT (HS256, RS256), API keys, local mode, and every way a token can be bad."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from app.config import AuthSettings, Settings
from app.main import create_app
from tests.conftest import JWT_SECRET, bearer


@pytest_asyncio.fixture
async def client_for(settings: Settings):  # type: ignore[no-untyped-def]
    """A factory of clients for apps with other auth settings."""
    stack: list[AsyncIterator[None]] = []

    async def make(auth: AuthSettings) -> httpx.AsyncClient:
        app = create_app(settings.model_copy(update={"auth": auth}))
        ctx = app.router.lifespan_context(app)
        await ctx.__aenter__()
        stack.append(ctx)  # type: ignore[arg-type]
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    yield make
    for ctx in stack:
        await ctx.__aexit__(None, None, None)  # type: ignore[attr-defined]


def _hs256(claims: dict[str, object], secret: str = JWT_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_a_valid_token_is_accepted(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.get("/api/v1/sessions", headers=bearer(settings, "alice"))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_credentials"),
        ({"Authorization": "Basic abc"}, "malformed_credentials"),
        ({"Authorization": "Bearer"}, "malformed_credentials"),
        ({"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
        (
            {"Authorization": "Bearer " + _hs256({"sub": "a", "exp": time.time() + 60}, "wrong")},
            "invalid_token",
        ),
        (
            {"Authorization": "Bearer " + _hs256({"sub": "a", "exp": time.time() - 60})},
            "token_expired",
        ),
        ({"Authorization": "Bearer " + _hs256({"exp": time.time() + 60})}, "invalid_token"),
        ({"Authorization": "Bearer " + _hs256({"sub": "a"})}, "invalid_token"),
    ],
    ids=["missing", "basic", "empty", "garbage", "bad-signature", "expired", "no-sub", "no-exp"],
)
async def test_bad_credentials_are_401(
    client: httpx.AsyncClient, headers: dict[str, str], code: str
) -> None:
    response = await client.get("/api/v1/sessions", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["www-authenticate"] == "Bearer"


async def test_wrong_audience_is_401(client_for) -> None:  # type: ignore[no-untyped-def]
    http = await client_for(AuthSettings(jwt_secret=SecretStr(JWT_SECRET), jwt_audience="app"))
    good = _hs256({"sub": "a", "exp": time.time() + 60, "aud": "app"})
    bad = _hs256({"sub": "a", "exp": time.time() + 60, "aud": "other"})
    assert (
        await http.get("/api/v1/sessions", headers={"Authorization": f"Bearer {good}"})
    ).status_code == 200
    response = await http.get("/api/v1/sessions", headers={"Authorization": f"Bearer {bad}"})
    assert response.status_code == 401
    assert "audience" in response.json()["error"]["message"]


async def test_rs256_public_key_verifies_tokens(client_for) -> None:  # type: ignore[no-untyped-def]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    http = await client_for(AuthSettings(jwt_public_key=SecretStr(public)))
    token = jwt.encode({"sub": "rsa-user", "exp": time.time() + 60}, key, algorithm="RS256")
    created = await http.post(
        "/api/v1/sessions", json={"id": "rsa"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert created.status_code == 201
    # An HS256 token signed with the public key text must not pass (algorithm confusion).
    forged = jwt.encode({"sub": "x", "exp": time.time() + 60}, "not-the-key", algorithm="HS256")
    response = await http.get("/api/v1/sessions", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


KEY_ONE = "key-one-0123456789"
KEY_TWO = "key-two-0123456789"


async def test_api_keys_map_to_users(client_for) -> None:  # type: ignore[no-untyped-def]
    http = await client_for(AuthSettings(api_keys=SecretStr(f"svc={KEY_ONE},{KEY_TWO}")))
    response = await http.post(
        "/api/v1/sessions", json={"id": "k1"}, headers={"X-API-Key": KEY_ONE}
    )
    assert response.status_code == 201
    other = await http.get("/api/v1/sessions/k1", headers={"X-API-Key": KEY_TWO})
    assert other.status_code == 404
    wrong = await http.get("/api/v1/sessions", headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"


def test_api_keys_are_kept_only_as_hashes() -> None:
    auth = AuthSettings(api_keys=SecretStr("svc=plain-key-0123456789,ops=sha256:" + "ab" * 32))
    hashes = auth.api_key_hashes()
    assert "plain-key" not in str(hashes)
    assert hashes["ab" * 32] == "ops"
    assert list(hashes.values()) == ["svc", "ops"]


async def test_api_key_with_equals_sign_is_accepted(client_for) -> None:  # type: ignore[no-untyped-def]
    key = "c2VjcmV0LWtleS1mb3ItYWxpY2U="
    http = await client_for(AuthSettings(api_keys=SecretStr(f"alice={key}")))
    created = await http.post("/api/v1/sessions", json={"id": "eq"}, headers={"X-API-Key": key})
    assert created.status_code == 201
    listed = await http.get("/api/v1/sessions", headers={"X-API-Key": key})
    assert [s["id"] for s in listed.json()["sessions"]] == ["eq"]


@pytest.mark.parametrize("sent", ["=", "", "c2VjcmV0LWtleS1mb3ItYWxpY2U"])
async def test_a_lone_equals_sign_or_a_key_part_is_not_accepted(  # type: ignore[no-untyped-def]
    client_for, sent: str
) -> None:
    http = await client_for(AuthSettings(api_keys=SecretStr("alice=c2VjcmV0LWtleS1mb3ItYWxpY2U=")))
    response = await http.get("/api/v1/sessions", headers={"X-API-Key": sent})
    assert response.status_code == 401


async def test_local_mode_needs_no_credentials(client_for) -> None:  # type: ignore[no-untyped-def]
    http = await client_for(AuthSettings())
    response = await http.post("/api/v1/sessions", json={"id": "local"})
    assert response.status_code == 201
    assert (await http.get("/api/v1/sessions/local")).status_code == 200
