"""The playground in a real browser (Debian's Chromium through Playwright) against a real
`copilot serve` on the fake upstream: every flow of the page, and no request to any other
origin nor any CSP violation on the way (checked after each test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.auth import issue_token
from app.config import AuthSettings
from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import Served, serve, upstream_env, wait_until

expect = pytest.importorskip("playwright.sync_api").expect
expect.set_options(timeout=20_000)

JWT_SECRET = f"playground-{uuid.uuid4().hex}{uuid.uuid4().hex}"
API_KEY = f"pg-key-{uuid.uuid4().hex}"
ASSISTANT = "article[data-role=assistant]"


@dataclass
class Watched:
    """A page and what it did: requests, console messages, uncaught errors."""

    page: Any
    origin: str
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check_clean(self) -> None:
        foreign = [url for url in self.requests if not url.startswith(self.origin + "/")]
        assert not foreign, f"requests to other origins: {foreign}"
        csp = [line for line in self.console if "Content Security Policy" in line]
        assert not csp, f"CSP violations: {csp}"
        assert not self.errors, f"uncaught errors in the page: {self.errors}"


def _watch(browser: Any, served: Served) -> Iterator[Watched]:
    context = browser.new_context(base_url=served.base_url)
    context.set_default_timeout(20_000)
    page = context.new_page()
    watched = Watched(page, served.base_url)
    page.on("request", lambda request: watched.requests.append(request.url))
    page.on("console", lambda message: watched.console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    try:
        yield watched
    finally:
        context.close()
    watched.check_clean()


@pytest.fixture(scope="module")
def served(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """`copilot serve` in local mode (no auth), on the fake upstream."""
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_RETRY_MAX_ATTEMPTS="2",
        COPILOT_RETRY_BASE_DELAY_S="0.1",
    )
    with serve(env, tmp_path_factory.mktemp("playground")) as server:
        yield server


@pytest.fixture
def web(browser: Any, served: Served) -> Iterator[Watched]:
    """A fresh browser context on the local-mode server."""
    yield from _watch(browser, served)


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with served.client() as client:
        yield client


def new_chat(page: Any) -> str:
    """Open the page, create a session; its id."""
    page.goto("/")
    page.click("#new-session")
    expect(page.locator("#conversation")).to_be_visible()
    wait_until(lambda: page.evaluate("location.hash").startswith("#"))
    return str(page.evaluate("location.hash.slice(1)"))


def send(page: Any, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def history(http: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    return list(http.get(f"/api/v1/sessions/{session_id}/messages").json()["messages"])


def text_of(message: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in message["parts"] if p["type"] == "text")


def test_a_reply_streams_with_reasoning_a_tool_call_and_its_usage(web: Watched) -> None:
    page = web.page
    new_chat(page)
    send(page, "What time is it? [[fake:tool name=get_current_time input={} thinking=8]]")
    reply = page.locator(ASSISTANT).last
    expect(reply.locator(".part-reasoning")).to_be_visible()
    tool = reply.locator(".part-tool")
    expect(tool.locator(".tool-name")).to_have_text("get_current_time")
    expect(tool.locator(".tool-input")).to_have_text("{}")
    expect(tool).to_have_attribute("data-state", "output-available")
    expect(tool.locator(".tool-output")).not_to_be_empty()
    expect(reply.locator(".part-text").last).to_contain_text("Tool result")
    expect(reply.locator(".usage")).to_contain_text("out tokens")
    expect(reply.locator(".usage")).to_contain_text("$")


def test_a_streamed_reply_grows_while_it_streams(web: Watched) -> None:
    page = web.page
    new_chat(page)
    send(page, "[[fake:text tokens=30 rate=50]]")
    expect(page.locator("#stop")).to_be_visible()
    text = page.locator(ASSISTANT).last.locator(".part-text")
    wait_until(lambda: 0 < len(text.inner_text().split()) < 30, timeout=10)
    expect(page.locator("#stop")).to_be_hidden()
    assert len(text.inner_text().split()) == 30


def test_an_error_shows_its_code_and_whether_retrying_helps(web: Watched) -> None:
    page = web.page
    new_chat(page)
    send(page, "[[fake:error status=400]]")
    error = page.locator(ASSISTANT).last.locator(".part-error")
    expect(error.locator(".error-code")).to_have_text("invalid_request")
    expect(error.locator(".error-retry")).to_have_attribute("data-retryable", "false")
    expect(page.locator("#chat-error")).to_contain_text("invalid_request")
    send(page, "[[fake:error status=529]]")
    error = page.locator(ASSISTANT).last.locator(".part-error")
    expect(error.locator(".error-code")).to_have_text("overloaded")
    expect(error.locator(".error-retry")).to_have_attribute("data-retryable", "true")
    expect(error.locator(".retry")).to_be_visible()


def test_retries_of_the_upstream_show_as_a_status(web: Watched) -> None:
    page = web.page
    new_chat(page)
    send(page, "[[fake:error status=529 times=1 retry_after=2]]")
    expect(page.locator("#status-line")).to_contain_text("Retrying (attempt 2) after overloaded")
    expect(page.locator(ASSISTANT).last.locator(".part-text")).to_contain_text("Echo")
    expect(page.locator("#status-line")).to_be_hidden()


def test_a_reload_mid_stream_resumes_the_reply(web: Watched, http: httpx.Client) -> None:
    page = web.page
    session_id = new_chat(page)
    send(page, "[[fake:text tokens=80 rate=20]]")
    text = page.locator(ASSISTANT).last.locator(".part-text")
    wait_until(lambda: len(text.inner_text().split()) >= 5, timeout=10)
    with page.expect_response(lambda r: r.url.endswith(f"/chat/{session_id}/stream")) as resumed:
        page.reload()
    assert resumed.value.status == 200
    expect(page.locator("#stop")).to_be_visible()
    wait_until(lambda: page.locator("#stop").is_hidden(), timeout=15)
    stored = history(http, session_id)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert page.locator(ASSISTANT).count() == 1
    assert text.inner_text() == text_of(stored[1])
    assert len(text_of(stored[1]).split()) == 80


def test_stop_ends_the_turn_on_the_server(web: Watched, http: httpx.Client) -> None:
    page = web.page
    session_id = new_chat(page)
    send(page, "[[fake:text tokens=400 rate=20]]")
    text = page.locator(ASSISTANT).last.locator(".part-text")
    wait_until(lambda: len(text.inner_text().split()) >= 3, timeout=10)
    page.click("#stop")
    expect(page.locator("#stop")).to_be_hidden(timeout=10_000)
    turn = wait_until(
        lambda: [
            t
            for t in http.get(f"/api/v1/sessions/{session_id}/turns").json()["turns"]
            if t["status"] != "running"
        ],
        timeout=10,
    )[0]
    assert turn["status"] == "stopped"
    assert len(text.inner_text().split()) < 400


def test_regenerate_replaces_the_last_reply(web: Watched, http: httpx.Client) -> None:
    page = web.page
    session_id = new_chat(page)
    send(page, "hello there")
    reply = page.locator(ASSISTANT).last
    expect(reply.locator(".part-text")).to_contain_text("Echo: hello there")
    first_id = reply.get_attribute("data-id")
    reply.locator(".regenerate").click()
    expect(page.locator(ASSISTANT)).to_have_count(1)
    expect(page.locator(ASSISTANT).last).not_to_have_attribute("data-id", first_id or "")
    expect(page.locator(ASSISTANT).last.locator(".regenerate")).to_be_visible()
    stored = history(http, session_id)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["id"] == page.locator(ASSISTANT).last.get_attribute("data-id") != first_id


def test_thumbs_store_feedback(web: Watched, http: httpx.Client) -> None:
    page = web.page
    session_id = new_chat(page)
    send(page, "rate me")
    reply = page.locator(ASSISTANT).last
    expect(reply.locator(".regenerate")).to_be_visible()
    reply.locator(".thumb-up").click()
    expect(reply.locator(".thumb-up")).to_have_attribute("aria-pressed", "true")
    assert history(http, session_id)[1]["metadata"]["feedback"]["rating"] == "up"
    reply.locator(".thumb-down").click()
    expect(reply.locator(".thumb-down")).to_have_attribute("aria-pressed", "true")
    assert history(http, session_id)[1]["metadata"]["feedback"]["rating"] == "down"
    reply.locator(".thumb-down").click()
    expect(reply.locator(".thumb-down")).to_have_attribute("aria-pressed", "false")
    assert "feedback" not in history(http, session_id)[1]["metadata"]
    page.reload()
    expect(page.locator(ASSISTANT).last.locator(".thumb-up")).to_have_attribute(
        "aria-pressed", "false"
    )


def test_sessions_are_paged_renamed_and_deleted(web: Watched, http: httpx.Client) -> None:
    for n in range(21):
        assert http.post("/api/v1/sessions", json={"title": f"paged {n}"}).status_code == 201
    page = web.page
    page.goto("/")
    items = page.locator("#sessions > li")
    expect(items).to_have_count(20)
    page.click("#more-sessions")
    total = len(http.get("/api/v1/sessions", params={"limit": 200}).json()["sessions"])
    expect(items).to_have_count(min(total, 40))

    first = items.first
    session_id = first.get_attribute("data-id")
    first.locator(".session-rename").click()
    page.fill(".session-title-input", "Renamed in the browser")
    page.press(".session-title-input", "Enter")
    expect(page.locator(f"#sessions > li[data-id='{session_id}'] .session-open")).to_have_text(
        "Renamed in the browser"
    )
    assert http.get(f"/api/v1/sessions/{session_id}").json()["title"] == "Renamed in the browser"

    row = page.locator(f"#sessions > li[data-id='{session_id}']")
    row.locator(".session-delete").click()
    row.locator(".session-delete").click()
    expect(row).to_have_count(0)
    assert http.get(f"/api/v1/sessions/{session_id}").status_code == 404


def test_a_message_sent_during_a_reply_waits_its_turn(web: Watched, http: httpx.Client) -> None:
    page = web.page
    session_id = new_chat(page)
    send(page, "[[fake:text tokens=60 rate=20]]")
    # The reply has begun on the server (a message sent before could overtake the first).
    expect(page.locator(ASSISTANT).last.locator(".part-text")).not_to_be_empty()
    page.select_option("#busy-mode", "enqueue")
    send(page, "and then this")
    expect(page.locator("#queue .queued-state")).to_contain_text("waiting (position 1)")
    expect(page.locator(ASSISTANT)).to_have_count(2, timeout=20_000)
    expect(page.locator(ASSISTANT).last.locator(".part-text")).to_have_text("Echo: and then this")
    expect(page.locator("#queue > li")).to_have_count(0)
    wait_until(lambda: len(history(http, session_id)) == 4, timeout=10)
    assert [text_of(m) for m in history(http, session_id)][2:] == [
        "and then this",
        "Echo: and then this",
    ]


def test_a_message_sent_during_a_reply_can_steer_it(web: Watched) -> None:
    page = web.page
    new_chat(page)
    send(page, "[[fake:tool name=get_current_time input={} delay=2]]")
    expect(page.locator(ASSISTANT)).to_have_count(1)  # `start`: the turn runs on the server
    page.select_option("#busy-mode", "steer")
    send(page, "answer in French")
    steer = page.locator(ASSISTANT).last.locator(".part-steer")
    expect(steer).to_contain_text("answer in French")
    expect(page.locator("#queue > li")).to_have_count(0)
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator(ASSISTANT)).to_have_count(1)


# ---- with auth configured ----


@pytest.fixture(scope="module")
def served_with_auth(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_JWT_SECRET=JWT_SECRET,
        COPILOT_API_KEYS=f"keyed-user={API_KEY}",
    )
    with serve(env, tmp_path_factory.mktemp("playground-auth")) as server:
        yield server


@pytest.fixture
def web_with_auth(browser: Any, served_with_auth: Served) -> Iterator[Watched]:
    yield from _watch(browser, served_with_auth)


@pytest.mark.parametrize("kind", ["jwt", "api_key"])
def test_with_auth_the_page_asks_for_a_token_then_works(
    kind: str, web_with_auth: Watched, tmp_path: Path
) -> None:
    page = web_with_auth.page
    page.goto("/")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    page.fill("#signin-token", "not-a-valid-key-0123456789")
    page.press("#signin-token", "Enter")
    expect(page.locator("#signin-error")).to_contain_text("invalid_api_key")
    secret = (
        issue_token(AuthSettings(jwt_secret=JWT_SECRET), "jwt-user") if kind == "jwt" else API_KEY
    )  # type: ignore[arg-type]
    page.fill("#signin-token", secret)
    page.press("#signin-token", "Enter")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#whoami")).to_have_text("signed in")
    new_chat(page)
    send(page, "hello with credentials")
    expect(page.locator(ASSISTANT).last.locator(".part-text")).to_have_text(
        "Echo: hello with credentials"
    )
    # The credential stays for the tab: a reload resumes without asking again.
    page.reload()
    expect(page.locator(ASSISTANT).last.locator(".part-text")).to_have_text(
        "Echo: hello with credentials"
    )
    page.click("#signout")
    expect(page.locator("#signin")).to_be_visible()
