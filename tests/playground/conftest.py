"""Fixtures of the playground tests: its npm packages, and Chromium driven by Playwright.

Tools the tests need (npm, Debian's `chromium`) skip the tests when missing, except under CI
(`CI` set), where a missing tool is a failure: it must not pass unnoticed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = ROOT / "playground"
CHROMIUM = os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium")


def unavailable(reason: str) -> None:
    """Fail under CI, skip elsewhere."""
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def _installed_matches_lock() -> bool:
    """Whether node_modules holds exactly what package-lock.json pins (npm's own record)."""
    try:
        wanted = json.loads((SOURCE_DIR / "package-lock.json").read_text())["packages"]
        have = json.loads((SOURCE_DIR / "node_modules" / ".package-lock.json").read_text())
    except (OSError, ValueError, KeyError):
        return False
    installed = have.get("packages", {})
    return all(
        installed.get(path, {}).get("version") == entry.get("version")
        for path, entry in wanted.items()
        if path and not entry.get("optional")
    )


@pytest.fixture(scope="session")
def npm() -> str:
    """npm, with playground/node_modules installed as the lock file pins (offline first)."""
    path = shutil.which("npm")
    if path is None:
        unavailable("npm is not installed: the playground's build cannot be checked")
    assert path is not None
    if _installed_matches_lock():
        return path
    attempts = []
    for extra in (["--offline"], []):
        command = [path, "ci", "--no-audit", "--no-fund", *extra]
        proc = subprocess.run(
            command, cwd=SOURCE_DIR, capture_output=True, text=True, timeout=600, check=False
        )
        if proc.returncode == 0 and _installed_matches_lock():
            return path
        attempts.append(
            f"$ {' '.join(command)}\nexit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        )
    unavailable("npm ci failed in playground/:\n" + "\n".join(attempts))
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright (no browser download)."""
    if not Path(CHROMIUM).is_file():
        unavailable(f"{CHROMIUM} is missing: apt-get install chromium (or set PLAYGROUND_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()
