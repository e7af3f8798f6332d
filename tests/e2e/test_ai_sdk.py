"""The real `ai` npm package (majors 5, 6 and 7) against a real `copilot serve`.

`chat-client.mjs` drives the server the way a `useChat` frontend does and audits every stream
(PROTOCOL.md says what it checks). One server, on the test database and Redis and pointed at
the fake upstream, serves the whole module with JWT auth on; each version is its own test so
a failure names the version.

Node is a test dependency: without it the tests skip, except under CI, where they fail. The
pinned packages are installed with `npm ci` (offline first, from the npm cache) whenever
`node_modules` is missing or differs from `package-lock.json`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.api.auth import issue_token
from app.config import AuthSettings
from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import Served, serve, upstream_env

E2E_DIR = Path(__file__).resolve().parent
VERSIONS = ["ai5", "ai6", "ai7"]
BACKENDS = ["anthropic", "claude_sdk"]
JWT_SECRET = f"e2e-{uuid.uuid4().hex}-{uuid.uuid4().hex}"
USER = "e2e-user"
SCENARIO_TIMEOUT_MS = 30_000
CLIENT_TIMEOUT_S = 240
PROBE_TIMEOUT_S = 60
SERVER_LOG_LINES = 120
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.MULTILINE)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def _unavailable(reason: str) -> None:
    """Fail under CI, skip elsewhere: a missing tool must not pass unnoticed in CI."""
    if _in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def _installed_matches_lock() -> bool:
    """Whether node_modules holds exactly the versions package-lock.json pins.

    npm records what it installed in `node_modules/.package-lock.json`; comparing versions
    there with the lockfile's catches a stale tree without trusting file times.
    """
    installed = E2E_DIR / "node_modules" / ".package-lock.json"
    if not installed.is_file():
        return False
    try:
        wanted = json.loads((E2E_DIR / "package-lock.json").read_text())["packages"]
        have = json.loads(installed.read_text())["packages"]
    except (OSError, ValueError, KeyError):
        return False
    for path, entry in wanted.items():
        if not path or entry.get("dev") or entry.get("optional"):
            continue
        if have.get(path, {}).get("version") != entry.get("version"):
            return False
    return True


def _npm_ci() -> None:
    """Install the pinned packages: from the npm cache if possible, else from the registry."""
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm is not installed: cannot install the `ai` packages of tests/e2e")
        return
    attempts: list[str] = []
    for extra in (["--offline"], []):
        command = [npm, "ci", "--no-audit", "--no-fund", *extra]
        try:
            proc = subprocess.run(
                command, cwd=E2E_DIR, capture_output=True, text=True, timeout=600, check=False
            )
        except subprocess.TimeoutExpired:
            attempts.append(f"$ {' '.join(command)}\ntimed out")
            continue
        if proc.returncode == 0 and _installed_matches_lock():
            return
        output = f"{proc.stdout}{proc.stderr}"
        attempts.append(f"$ {' '.join(command)}\nexit {proc.returncode}\n{output}")
    _unavailable("npm ci failed in tests/e2e:\n" + "\n".join(attempts))


def _node_with_packages() -> str:
    """The node binary, with tests/e2e/node_modules installed as package-lock.json pins."""
    path = shutil.which("node")
    if path is None:
        _unavailable("node is not installed: the AI SDK end-to-end tests need Node.js >= 20")
    assert path is not None
    if not _installed_matches_lock():
        _npm_ci()
    return path


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, ready to run the scripts of tests/e2e."""
    return _node_with_packages()


@pytest.fixture(scope="module")
def auth() -> AuthSettings:
    """The JWT settings the server runs with."""
    return AuthSettings(jwt_secret=SecretStr(JWT_SECRET))


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest,
    node: str,
    fake: FakeUpstreamHandle,
    auth: AuthSettings,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """`copilot serve` with JWT auth and title generation on, pointed at the fake upstream,
    on each backend in turn (the Claude SDK one runs the real CLI)."""
    root = Path(tempfile.mkdtemp(prefix="ws", dir="/tmp"))  # short: the CLI's socket path
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_JWT_SECRET=JWT_SECRET,
        COPILOT_TITLE_GENERATION="1",
        COPILOT_BACKEND=request.param,
        COPILOT_WORKSPACES_DIR=str(root),
    )
    with serve(env, tmp_path_factory.mktemp("e2e")) as server:
        server.headers = {"Authorization": f"Bearer {issue_token(auth, USER)}"}
        yield server
    shutil.rmtree(root, ignore_errors=True)


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _report(
    what: str, proc: subprocess.CompletedProcess[str] | None, output: str, served: Served | None
) -> str:
    parts = [what]
    if proc is not None:
        parts.append(f"exit code {proc.returncode}")
    parts.append(f"--- client output ---\n{output}")
    if served is not None:
        server_log = _tail(served.log(), SERVER_LOG_LINES)
        parts.append(f"--- server log (last {SERVER_LOG_LINES} lines) ---\n{server_log}")
    return "\n".join(parts)


def _decoded(captured: bytes | str | None) -> str:
    """What a timed-out process printed (bytes, whatever `text=` said)."""
    if isinstance(captured, bytes):
        return captured.decode(errors="replace")
    return captured or ""


def _run_node(
    node: str, script: str, env: dict[str, str], timeout: float, served: Served | None
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run a script of tests/e2e; fail with everything it printed if it hangs."""
    command = [node, str(E2E_DIR / script)]
    try:
        proc = subprocess.run(
            command,
            cwd=E2E_DIR,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out, err = _decoded(exc.stdout), _decoded(exc.stderr)
        pytest.fail(
            _report(
                f"{script} timed out after {timeout}s",
                None,
                f"{out}\n--- stderr ---\n{err}",
                served,
            )
        )
    return proc, f"{proc.stdout}\n--- stderr ---\n{proc.stderr}"


@pytest.mark.parametrize("version", VERSIONS)
def test_the_ai_sdk_chats_with_the_server(
    version: str, node: str, served: Served, auth: AuthSettings
) -> None:
    env = {
        "BASE_URL": served.base_url,
        "AUTH_TOKEN": issue_token(auth, USER),
        "AI_VERSIONS": version,
        "SCENARIO": "all",
        "WIRE_CHECKS": "1",
        "IDLE_RESUME": "204",
        "SCENARIO_TIMEOUT_MS": str(SCENARIO_TIMEOUT_MS),
        "DEBUG": "1",
    }
    proc, output = _run_node(node, "chat-client.mjs", env, CLIENT_TIMEOUT_S, served)
    summary = SUMMARY.findall(proc.stdout)
    passed = sum(line.startswith(f"ok {version} ") for line in proc.stdout.splitlines())
    ok = proc.returncode == 0 and summary == [(str(passed), "0")] and passed > 0
    assert ok, _report(f"the {version} client failed against copilot serve", proc, output, served)


def test_the_protocol_probe_matches_the_installed_packages(node: str) -> None:
    proc, output = _run_node(node, "protocol-probe.mjs", {}, PROBE_TIMEOUT_S, None)
    assert proc.returncode == 0, _report(
        "protocol-probe.mjs found a changed outcome", proc, output, None
    )
    assert "probe: every outcome as expected" in proc.stdout, output
