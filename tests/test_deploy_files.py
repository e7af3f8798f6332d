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
    services = subprocess.run(
        [tool, "config", "--services"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COPILOT_JWT_SECRET": "ci-secret"},
        check=True,
    ).stdout.split()
    assert sorted(services) == ["app", "postgres", "redis"]


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
