"""Deployment files validate here, where there is no Docker engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docker_compose_config_validates() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
        pytest.skip("docker-compose is not installed")
    result = subprocess.run(
        [tool, "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COPILOT_JWT_SECRET": "ci-secret"},
    )
    assert result.returncode == 0, result.stderr
    yaml = pytest.importorskip("yaml")
    resolved = subprocess.run(
        [tool, "--profile", "langfuse", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "COPILOT_JWT_SECRET": "ci-secret",
            "LANGFUSE_PUBLIC_KEY": "pk-lf-ci",
            "LANGFUSE_SECRET_KEY": "sk-lf-ci",
        },
        check=True,
    ).stdout
    services = yaml.safe_load(resolved)["services"]
    # Without a profile: the app and its own dependencies.
    assert sorted(name for name, s in services.items() if not s.get("profiles")) == [
        "app",
        "postgres",
        "redis",
    ]
    # The `langfuse` profile: Langfuse v3 and everything it needs.
    assert sorted(name for name, s in services.items() if s.get("profiles") == ["langfuse"]) == [
        "langfuse-clickhouse",
        "langfuse-minio",
        "langfuse-postgres",
        "langfuse-redis",
        "langfuse-web",
        "langfuse-worker",
    ]
    app = services["app"]["environment"]
    assert app["LANGFUSE_BASE_URL"] == "http://langfuse-web:3000"
    web = services["langfuse-web"]["environment"]
    worker = services["langfuse-worker"]["environment"]
    for env in (web, worker):
        assert env["DATABASE_URL"].startswith("postgresql://langfuse:langfuse@langfuse-postgres")
        assert env["CLICKHOUSE_URL"] == "http://langfuse-clickhouse:8123"
        assert env["REDIS_HOST"] == "langfuse-redis"
        assert env["LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT"] == "http://langfuse-minio:9000"
        assert len(env["ENCRYPTION_KEY"]) == 64
    # The project the profile creates has the keys the app sends with.
    assert web["LANGFUSE_INIT_PROJECT_PUBLIC_KEY"] == app["LANGFUSE_PUBLIC_KEY"] == "pk-lf-ci"
    assert web["LANGFUSE_INIT_PROJECT_SECRET_KEY"] == app["LANGFUSE_SECRET_KEY"] == "sk-lf-ci"


def test_dockerfile_is_multi_stage_with_uv_and_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM .+ AS (\w+)$", text, re.MULTILINE)
    assert len(stages) >= 2
    assert "uv sync --frozen" in text
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")
    copied = re.findall(r"^COPY (?:--\S+ )*(\S+)", text, re.MULTILINE)
    for source in copied:
        if not source.startswith(("/", "--")) and source != ".":
            assert (ROOT / source).exists() or source == "pyproject.toml", source
