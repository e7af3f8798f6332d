"""The committed build (app/static/playground) is what `npm run build` makes of playground/."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.playground.conftest import ROOT, SOURCE_DIR

COMMITTED = ROOT / "app" / "static" / "playground"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _run(npm: str, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [npm, "run", script],
        cwd=SOURCE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_committed_build_is_what_the_sources_build_to(npm: str, tmp_path: Path) -> None:
    out = tmp_path / "playground"
    proc = _run(npm, "build", PLAYGROUND_OUT=str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built, committed = _tree(out), _tree(COMMITTED)
    stale = sorted(
        name for name in built.keys() | committed.keys() if built.get(name) != committed.get(name)
    )
    assert not stale, (
        f"app/static/playground differs from a fresh build in {stale}: run "
        "`npm --prefix playground ci && npm --prefix playground run build` and commit the result"
    )


def test_the_sources_typecheck(npm: str) -> None:
    proc = _run(npm, "typecheck")
    assert proc.returncode == 0, proc.stdout + proc.stderr
