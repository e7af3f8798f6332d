"""Every route fuzzed from the running server's own OpenAPI schema (schemathesis): as alice,
with bob's session ids (idle, with history, running) and alice's own in the path and body.

No answer may be a 5xx or fall outside the schema (status, content type, body); bob's ids
must answer like ids nobody uses. Most cases get a NUL, a lone surrogate or a control
character in one of their strings, the inputs that used to be 500s. Bounded for CI: a few
examples per operation and mode, no shrinking, no example database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi import checks as openapi_checks

from app.api.auth import issue_token
from app.config import AuthSettings
from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.conftest import JWT_SECRET
from tests.serving import Served, serve, stream, upstream_env, wait_until

EXAMPLES = 12  # per operation and generation mode
REQUEST_TIMEOUT_S = 30
# Appended to one string of a case: NUL, a lone surrogate (sent escaped), a control character.
POISON = st.sampled_from([None, None, "\x00", "\ud800", "\x1b"])


@dataclass
class Tenants:
    """alice's credentials and ids, bob's ids."""

    alice: dict[str, str]
    alice_ids: list[str]
    bob_ids: list[str]
    bob_running: str


def _headers(user: str) -> dict[str, str]:
    token = issue_token(AuthSettings(jwt_secret=SecretStr(JWT_SECRET)), user)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def served(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """`copilot serve` with JWT auth, pointed at the fake upstream."""
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_JWT_SECRET=JWT_SECRET,
        COPILOT_RETRY_MAX_ATTEMPTS="1",
        COPILOT_MAX_MESSAGE_CHARS="2000",
    )
    with serve(env, tmp_path_factory.mktemp("fuzz")) as server:
        yield server


@pytest.fixture(scope="module")
def tenants(served: Served) -> Iterator[Tenants]:
    """bob's sessions (idle, answered, one with a turn running through the test), alice's."""
    bob, alice = _headers("bob"), _headers("alice")
    tag = uuid.uuid4().hex[:6]
    with httpx.Client(base_url=served.base_url, timeout=REQUEST_TIMEOUT_S) as http:
        bob_idle, bob_answered, bob_running = (
            f"bob-{k}-{tag}" for k in ("idle", "answered", "run")
        )
        assert http.post("/api/v1/sessions", json={"id": bob_idle}, headers=bob).status_code == 201
        answered = stream(
            http, "POST", "/api/v1/chat", json={"id": bob_answered, "message": "hi"}, headers=bob
        )
        assert answered.status == 200
        alice_ids = [f"alice-{k}-{tag}" for k in ("a", "b")]
        for sid in alice_ids:
            assert http.post("/api/v1/sessions", json={"id": sid}, headers=alice).status_code == 201
        slow = {"id": bob_running, "message": "[[fake:text tokens=100000 rate=20]]"}
        with http.stream("POST", "/api/v1/chat", json=slow, headers=bob) as running:
            assert running.status_code == 200
            wait_until(
                lambda: (
                    http.get(f"/api/v1/sessions/{bob_running}", headers=bob).json()["status"]
                    == "running"
                )
            )
            yield Tenants(alice, alice_ids, [bob_idle, bob_answered, bob_running], bob_running)
            http.post(f"/api/v1/chat/{bob_running}/stop", headers=bob)


def _with_ids(case: Case, session_id: str | None) -> str | None:
    """Put `session_id` where the operation takes a session id (the path, or the `id` of a
    chat or new-session body); the id put, if any."""
    if session_id is None:
        return None
    if case.path_parameters and "session_id" in case.path_parameters:
        case.path_parameters["session_id"] = session_id
        return session_id
    if case.operation.path in ("/api/v1/chat", "/api/v1/sessions") and isinstance(case.body, dict):
        case.body["id"] = session_id
        return session_id
    return None


def _strings(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Where the strings of a JSON value are."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _strings(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _strings(v, (*path, i))]
    return []


def _poison(case: Case, char: str | None, pick: int) -> None:
    """Append `char` to one string of the body or query (the characters of item 7)."""
    if char is None:
        return
    places: list[tuple[Any, tuple[Any, ...]]] = [(case.body, p) for p in _strings(case.body)]
    if char != "\ud800":  # a URL cannot carry a lone surrogate (it has no UTF-8): bodies only
        places += [(case.query, p) for p in _strings(case.query or {})]
    if not places:
        return
    root, path = places[pick % len(places)]
    if not path:  # the body itself is a string (a negative case), sent as raw text
        if char != "\ud800":  # which has no UTF-8 for a lone surrogate either
            case.body = root + char
        return
    for key in path[:-1]:
        root = root[key]
    root[path[-1]] += char


def _tenant_check(case: Case, response: Any, tenants: Tenants, session_id: str | None) -> None:
    """bob's ids answer as unknown ids do: 404, or what validation says first."""
    if session_id not in tenants.bob_ids:
        return
    status = response.status_code
    if case.operation.path.endswith("/stream"):
        allowed = {204, 422}  # an unknown session has no stream to resume
    elif case.method == "POST" and case.operation.path == "/api/v1/sessions":
        # A taken id is 409 `session_exists` with the same body whoever holds it: ids are one
        # namespace chosen by clients (ARCHITECTURE.md, "Auth").
        allowed = {409, 413, 422}
    else:
        allowed = {401, 404, 413, 422}
    assert status in allowed, f"{case.method} {case.formatted_path} on {session_id}: {status}"


def _operations(served: Served, headers: dict[str, str]) -> list[Any]:
    # With auth configured the schema needs the API's credentials (COPILOT_DOCS=auth).
    schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json", headers=headers)
    return [result.ok() for result in schema.get_all_operations()]


def test_every_route_as_another_tenant_answers_4xx_within_the_schema(
    served: Served, tenants: Tenants
) -> None:
    failures: list[str] = []
    ids = st.one_of(st.none(), st.sampled_from(tenants.alice_ids + tenants.bob_ids))
    excluded = [openapi_checks.ignored_auth, openapi_checks.positive_data_acceptance]
    for operation in _operations(served, tenants.alice):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(
                case=operation.as_strategy(generation_mode=mode),
                session_id=ids,
                char=POISON,
                pick=st.integers(0, 50),
            )
            def fuzz(case: Case, session_id: str | None, char: str | None, pick: int) -> None:
                _poison(case, char, pick)
                used = _with_ids(case, session_id)
                response = case.call(
                    base_url=served.base_url, headers=tenants.alice, timeout=REQUEST_TIMEOUT_S
                )
                skipped = excluded
                if response.status_code == 413:  # refused for its size, unread: a rejection
                    skipped = [*excluded, openapi_checks.negative_data_rejection]
                elif used is not None and case.path_parameters:
                    # A real session id replaced the path's: what made the case invalid may
                    # be gone with it (a valid request then rightly succeeds).
                    skipped = [*excluded, openapi_checks.negative_data_rejection]
                case.validate_response(response, excluded_checks=skipped, headers=tenants.alice)
                _tenant_check(case, response, tenants, used)

            try:
                fuzz()
            except Unsatisfiable:
                pass  # no parameters or body to make invalid (negative mode of /healthz)
            except (Exception, FailureGroup) as exc:  # one operation's must not hide others'
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    server_errors = [line for line in served.log().splitlines() if "Traceback" in line]
    assert not failures, "\n\n".join(failures)
    assert not server_errors, served.log()[-5000:]
    with httpx.Client(base_url=served.base_url, timeout=REQUEST_TIMEOUT_S) as http:
        bob = http.get(f"/api/v1/sessions/{tenants.bob_running}/turns", headers=_headers("bob"))
    turn = bob.json()["turns"][0]
    assert turn["status"] == "running", f"alice's requests ended bob's turn: {turn}"
