"""Per-session workspaces for the Claude Code CLI: its cwd, HOME, CLAUDE_CONFIG_DIR and TMPDIR.

Layout under the root (`COPILOT_WORKSPACES_DIR`), every directory mode 0700:

    <root>/<slug>-<hash>/work    the CLI's cwd, the only place file tools may touch
    <root>/<slug>-<hash>/home    HOME; CLAUDE_CONFIG_DIR is home/.claude
    <root>/<slug>-<hash>/tmp     TMPDIR

HOME and TMPDIR sit beside `work`, not inside it, so the file-tool guards keep the model out
of the CLI's own config and transcripts.

The directory name is a slug of the lower-cased id (only `[a-z0-9_-]`, at most 16 characters)
plus the first 16 hex digits of the SHA-256 of the exact id. The slug is for people; the hash
makes names unique: ids that differ only by case, by characters the slug replaces, or by
look-alike unicode get different names, also on a case-insensitive filesystem (the hash is
lower-case hex). No id can produce `.`, `..`, a separator or NUL, so the name is always one
component directly under the root.

What the CLI leaves in TMPDIR (measured with the bundled CLI 2.1.330): `cc-socks/<pid>.sock`
while it runs, removed on a clean exit and left by a killed one; and
`claude-<uid>/fswatch-probe-<random>/`, created at start-up and left behind by some clean exits
too (it varies from run to run). A killed CLI also leaves `sessions/<pid>.json` and
`sessions/<pid>.<hex>.key` in CLAUDE_CONFIG_DIR. `cleanup_leftovers` removes the sockets and
session records of dead processes and, when none of them names a live process (no CLI runs
here), every probe directory.

A socket path must fit 107 bytes: under a long root the CLI silently makes no socket
(measured; the session record still tells a live CLI). The name is at most 33 characters,
so the socket exists whenever the root is at most 47 bytes long.

0700 keeps other OS users out. Sessions run as the same OS user, so between sessions the
separation is the separate HOME/CONFIG/TMP plus the file-tool guards of hooks.py; a Bash
command can still reach other workspaces (see hooks.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import psutil

_MODE = 0o700
_SLUG_CHARS = re.compile(r"[^a-z0-9_-]+")
_SLUG_MAX = 16
_HASH_HEX = 16


def workspace_name(session_id: str) -> str:
    """The directory name of a session's workspace: a safe slug plus a hash of the exact id."""
    exact = session_id.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(exact).hexdigest()[:_HASH_HEX]
    slug = _SLUG_CHARS.sub("_", session_id.lower())[:_SLUG_MAX].strip("_-")
    return f"{slug or 'session'}-{digest}"


@dataclass(frozen=True, slots=True)
class Workspace:
    """The directories of one session's CLI."""

    path: Path
    home: Path
    config_dir: Path
    tmp: Path

    def env(self) -> dict[str, str]:
        """The environment variables that point the CLI at this workspace."""
        return {
            "HOME": str(self.home),
            "CLAUDE_CONFIG_DIR": str(self.config_dir),
            "TMPDIR": str(self.tmp),
        }

    def cleanup_leftovers(self) -> None:
        """Remove what dead CLIs left here; the fswatch probes only when no CLI here is alive."""
        live = False
        for entry in (*_entries(self.tmp / "cc-socks"), *_entries(self.config_dir / "sessions")):
            pid = entry.name.split(".", 1)[0]
            if not pid.isdigit():
                continue
            if _alive(int(pid)):
                live = True
            else:
                _remove(entry)
        if live:
            return
        for user_dir in _entries(self.tmp):
            if user_dir.name.startswith("claude-"):
                for probe in _entries(user_dir):
                    if probe.name.startswith("fswatch-probe-"):
                        _remove(probe)


class Workspaces:
    """Session workspaces under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))

    def dir_of(self, session_id: str) -> Path:
        """The directory a session's workspace lives in (it may not exist)."""
        return self.root / workspace_name(session_id)

    def for_session(self, session_id: str) -> Workspace:
        """The session's workspace, its directories created (mode 0700) if missing."""
        _make_dir(self.root, parents=True)
        base = self.dir_of(session_id)
        workspace = Workspace(
            path=base / "work",
            home=base / "home",
            config_dir=base / "home" / ".claude",
            tmp=base / "tmp",
        )
        for directory in (
            base,
            workspace.path,
            workspace.home,
            workspace.config_dir,
            workspace.tmp,
        ):
            _make_dir(directory)
        return workspace

    async def remove(self, session_id: str) -> None:
        """Delete everything of the session's workspace (idempotent; never outside the root)."""
        await asyncio.to_thread(self._remove_sync, session_id)

    def _remove_sync(self, session_id: str) -> None:
        base = self.dir_of(session_id)
        if base.parent != self.root:  # cannot happen by construction; a last line of defence
            raise ValueError(f"workspace {base} is not directly under {self.root}")
        _remove(base)


def _make_dir(directory: Path, *, parents: bool = False) -> None:
    """Create `directory` with mode 0700, refusing a symlink in its place."""
    try:
        directory.mkdir(mode=_MODE, parents=parents)
    except FileExistsError:
        if directory.is_symlink() or not directory.is_dir():
            raise NotADirectoryError(f"{directory} exists and is not a directory") from None
    os.chmod(directory, _MODE)  # mkdir's mode is filtered by the umask


def _entries(directory: Path) -> list[Path]:
    """What a real directory holds; nothing for a missing one or a symlink (never followed)."""
    if directory.is_symlink():
        return []
    try:
        return list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _alive(pid: int) -> bool:
    """Whether `pid` runs (an unreaped zombie counts as dead: its CLI is gone)."""
    try:
        status: str = psutil.Process(pid).status()
    except psutil.Error:
        return False
    return status != "zombie"  # psutil.STATUS_ZOMBIE, which is untyped


def _remove(path: Path) -> None:
    """Remove a file, symlink (not its target) or directory tree; missing is fine."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
            return
        try:
            shutil.rmtree(path)
        except PermissionError:  # a tool may have left a directory read-only: make it ours
            _owner_writable(path)
            shutil.rmtree(path)
    except FileNotFoundError:
        pass


def _owner_writable(top: Path) -> None:
    """Give the owner rwx on every directory under `top`, never following a symlink."""
    os.chmod(top, stat.S_IRWXU)
    for dirpath, dirnames, _files in os.walk(top):
        for name in dirnames:
            child = os.path.join(dirpath, name)
            if not os.path.islink(child):
                os.chmod(child, stat.S_IRWXU)
