"""The `copilot` command as a user runs it: serve on embedded services, token, migrate."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import jwt
import psutil
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import _admin
from tests.serving import (
    COPILOT,
    assert_well_formed,
    free_port,
    run_copilot,
    serve,
    stream,
    turns,
    upstream_env,
    wait_until,
)

BARE_ENV = {"COPILOT_LOG_LEVEL": "INFO"}


def _embedded_children(pid: int) -> list[psutil.Process]:
    """The postgres and redis-server processes started by the server `pid`."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.name() in ("postgres", "redis-server"):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_serve_with_nothing_configured_runs_on_embedded_services(tmp_path: Path) -> None:
    env = {**BARE_ENV, "COPILOT_DATA_DIR": str(tmp_path / "data")}
    with serve(env, tmp_path) as served, served.client() as http:
        children = _embedded_children(served.proc.pid)
        assert {c.name() for c in children} == {"postgres", "redis-server"}
        created = http.post("/api/v1/sessions", json={"id": "kept", "title": "Kept"})
        assert created.status_code == 201
        assert http.post("/api/v1/sessions", json={"title": "Gone"}).status_code == 201
        listing = http.get("/api/v1/sessions").json()["sessions"]
        assert [s["title"] for s in listing] == ["Gone", "Kept"]
        assert http.get("/api/v1/sessions/kept").json()["title"] == "Kept"
        assert http.delete(f"/api/v1/sessions/{listing[0]['id']}").status_code == 204
        reply = stream(http, "POST", "/api/v1/chat", json={"id": "kept", "message": "hello"})
        assert_well_formed(reply)
        assert reply.text == "Echo: hello"
        assert "SIMULATED" in served.log()
        # A newcomer's first chat runs the real Claude Code CLI, pointed at the fake upstream.
        assert [t["backend"] for t in turns(http, "kept")] == ["claude_sdk"]
        pids = [c.pid for c in children]
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 0
    wait_until(lambda: not any(psutil.pid_exists(p) for p in pids), timeout=15)

    with serve(env, tmp_path) as again, again.client() as http:
        sessions = http.get("/api/v1/sessions").json()["sessions"]
        assert [s["id"] for s in sessions] == ["kept"]
        assert len(http.get("/api/v1/sessions/kept/messages").json()["messages"]) == 2


def test_a_second_serve_on_the_same_data_dir_fails_clearly(tmp_path: Path) -> None:
    env = {**BARE_ENV, "COPILOT_DATA_DIR": str(tmp_path / "data")}
    with serve(env, tmp_path) as first:
        second = run_copilot(["serve", "--port", str(free_port())], env, tmp_path)
        assert second.returncode == 1
        assert "in use by another copilot serve" in second.stderr
        with first.client() as http:
            assert http.get("/readyz").status_code == 200


def test_serve_refuses_a_public_address_without_auth(tmp_path: Path) -> None:
    result = run_copilot(["serve", "--host", "0.0.0.0", "--port", str(free_port())], {}, tmp_path)
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in result.stderr
    assert not (tmp_path / ".copilot").exists(), "nothing may start before the refusal"


def test_empty_api_key_is_refused_at_start_up(tmp_path: Path) -> None:
    env = {"COPILOT_API_KEYS": "svc=a-service-key-0123456789,alice="}
    result = run_copilot(["serve", "--port", str(free_port())], env, tmp_path)
    assert result.returncode == 2
    assert "COPILOT_API_KEYS entry 2: the key is empty" in result.stderr
    assert "a-service-key" not in result.stderr
    assert not (tmp_path / ".copilot").exists(), "nothing may start before the refusal"


def test_short_api_key_is_refused_at_start_up(tmp_path: Path) -> None:
    result = run_copilot(["serve"], {"COPILOT_API_KEYS": "alice=tiny-key"}, tmp_path)
    assert result.returncode == 2
    assert "entry 1: the key is shorter than 16 characters" in result.stderr
    assert "tiny-key" not in result.stderr


def test_ctrl_c_stops_the_server_and_its_embedded_services(tmp_path: Path) -> None:
    env = {**BARE_ENV, "COPILOT_DATA_DIR": str(tmp_path / "data")}
    with serve(env, tmp_path) as served:
        pids = [c.pid for c in _embedded_children(served.proc.pid)]
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(30) == 0
    wait_until(lambda: not any(psutil.pid_exists(p) for p in pids), timeout=15)


def test_token_prints_a_jwt_the_server_accepts(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    secret = "a-secret-for-the-token-command-0123456789"
    env = upstream_env("http://127.0.0.1:9", database_url, redis_url, COPILOT_JWT_SECRET=secret)
    printed = run_copilot(["token", "--user", "ada"], env, tmp_path).stdout.strip()
    assert jwt.decode(printed, secret, algorithms=["HS256"])["sub"] == "ada"
    with serve(env, tmp_path) as served:
        response = httpx.get(
            served.base_url + "/api/v1/sessions", headers={"Authorization": f"Bearer {printed}"}
        )
        assert response.status_code == 200
        assert httpx.get(served.base_url + "/api/v1/sessions").status_code == 401


def test_token_without_a_secret_says_so(tmp_path: Path) -> None:
    result = run_copilot(["token", "--user", "ada"], {}, tmp_path)
    assert result.returncode == 2
    assert "COPILOT_JWT_SECRET is not set" in result.stderr


def test_migrate_creates_the_schema(server_database_url: str) -> None:
    name = f"copilot_migrate_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(server_database_url, f'CREATE DATABASE "{name}"'))
    url = make_url(server_database_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrated = run_copilot(["migrate"], {"DATABASE_URL": url}, Path.cwd())
        assert migrated.returncode == 0, migrated.stderr

        async def tables() -> set[str]:
            engine = create_async_engine(url)
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
                names = {r[0] for r in rows}
            await engine.dispose()
            return names

        assert {
            "chat_sessions",
            "chat_messages",
            "turns",
            "turn_attempts",
            "transcript_entries",
            "alembic_version",
        } <= asyncio.run(tables())
    finally:
        asyncio.run(_admin(server_database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_configured_services_are_used_and_nothing_is_embedded(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "COPILOT_DATA_DIR": str(tmp_path / "data"),
        "COPILOT_REDIS_KEY_PREFIX": f"t-{uuid.uuid4().hex[:6]}",
    }
    with serve(env, tmp_path) as served:
        assert _embedded_children(served.proc.pid) == []
        assert not (tmp_path / "data" / "postgres").exists()
        assert not (tmp_path / "data" / "redis").exists()


def test_fake_upstream_command_answers_the_anthropic_sdk(tmp_path: Path) -> None:
    import anthropic

    port = free_port()
    proc = subprocess.Popen(
        [COPILOT, "fake-upstream", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=30)
        client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="x")
        reply = client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=50,
            messages=[{"role": "user", "content": "ping [[fake:text text='pong pong']]"}],
        )
        assert reply.content[0].type == "text"
        assert reply.content[0].text == "pong pong"
        assert reply.usage.output_tokens == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
