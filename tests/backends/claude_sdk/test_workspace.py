"""Session workspaces: hostile ids stay under the root and never collide; cleanup of leftovers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from claude_agent_sdk import ClaudeSDKClient, ClaudeSDKError

from app.backends.claude_sdk.workspace import Workspaces, workspace_name
from app.devtools.fake_upstream import FakeUpstreamHandle, running_fake_upstream
from tests.backends.claude_sdk.sdk_cli import (
    ask,
    cli_client,
    cli_options,
    cli_processes,
    leftovers,
    result_of,
    short_root,
)

HOSTILE_IDS = [
    ".",
    "..",
    "...",
    "a/../../b",
    "../../etc",
    "/etc/passwd",
    "/",
    "a\0b",
    "\0",
    "x" * 10_000,
    "ａｂｃ",  # fullwidth look-alike of "abc"
    "аbc",  # Cyrillic a
    "abc",
    "ABC",
    "Abc",
    "a b",
    "a_b",
    "a-b",
    "a.b",
    "a:b",
    "\\..\\..\\windows",
    "~",
    "~root",
    "$HOME",
    "-rf",
    "a\nb",
    "\ud800",  # a lone surrogate
    "",
]


@pytest.fixture
def workspaces(tmp_path: Path) -> Workspaces:
    """Workspaces under a fresh root."""
    return Workspaces(tmp_path / "root")


@pytest.fixture
def fake() -> Iterator[FakeUpstreamHandle]:
    """A fake upstream for one test."""
    with running_fake_upstream() as handle:
        yield handle


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("session_id", HOSTILE_IDS, ids=lambda v: repr(v)[:24])
def test_hostile_id_stays_one_directory_under_the_root(
    workspaces: Workspaces, session_id: str
) -> None:
    workspace = workspaces.for_session(session_id)
    base = workspace.path.parent
    assert base.parent == workspaces.root
    assert base.name not in (".", "..")
    assert "/" not in base.name
    assert "\0" not in base.name
    assert len(base.name) <= 60
    assert os.path.realpath(workspace.path).startswith(str(workspaces.root) + os.sep)
    assert [p.name for p in workspaces.root.iterdir()] == [base.name]


def test_names_never_collide_even_case_folded() -> None:
    names = [workspace_name(i) for i in HOSTILE_IDS]
    assert len({n.casefold() for n in names}) == len(set(HOSTILE_IDS))


def test_name_is_stable_and_readable() -> None:
    assert workspace_name("chat-42") == workspace_name("chat-42")
    assert workspace_name("Chat-42").startswith("chat-42-")


def test_directories_are_private_and_separate(workspaces: Workspaces) -> None:
    one, two = workspaces.for_session("one"), workspaces.for_session("two")
    for ws in (one, two):
        for directory in (ws.path.parent, ws.path, ws.home, ws.config_dir, ws.tmp):
            assert directory.is_dir()
            assert _mode(directory) == 0o700
    assert _mode(workspaces.root) == 0o700
    paths_one = {one.path, one.home, one.config_dir, one.tmp}
    paths_two = {two.path, two.home, two.config_dir, two.tmp}
    assert not paths_one & paths_two
    assert not one.home.is_relative_to(one.path)
    assert not one.tmp.is_relative_to(one.path)


def test_env_points_the_cli_at_the_workspace(workspaces: Workspaces) -> None:
    ws = workspaces.for_session("s1")
    assert ws.env() == {
        "HOME": str(ws.home),
        "CLAUDE_CONFIG_DIR": str(ws.config_dir),
        "TMPDIR": str(ws.tmp),
    }


def test_for_session_is_idempotent_and_restores_the_mode(workspaces: Workspaces) -> None:
    first = workspaces.for_session("s1")
    (first.path / "notes.txt").write_text("kept")
    first.path.chmod(0o755)
    again = workspaces.for_session("s1")
    assert again == first
    assert (again.path / "notes.txt").read_text() == "kept"
    assert _mode(again.path) == 0o700


def test_a_symlink_in_place_of_a_workspace_is_refused(
    workspaces: Workspaces, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    workspaces.root.mkdir()
    (workspaces.root / workspace_name("evil")).symlink_to(outside)
    with pytest.raises(NotADirectoryError):
        workspaces.for_session("evil")
    assert list(outside.iterdir()) == []


async def test_remove_deletes_everything_and_is_idempotent(workspaces: Workspaces) -> None:
    ws = workspaces.for_session("gone")
    (ws.path / "deep" / "er").mkdir(parents=True)
    (ws.path / "deep" / "er" / "f").write_text("x")
    (ws.config_dir / "projects").mkdir()
    (ws.path / "deep").chmod(0o500)
    await workspaces.remove("gone")
    assert list(workspaces.root.iterdir()) == []
    await workspaces.remove("gone")
    await workspaces.remove("never-existed")


async def test_remove_leaves_other_sessions_alone(workspaces: Workspaces) -> None:
    keep = workspaces.for_session("abc")
    workspaces.for_session("ABC")
    await workspaces.remove("ABC")
    assert keep.path.is_dir()
    assert [p.name for p in workspaces.root.iterdir()] == [keep.path.parent.name]


@pytest.mark.parametrize("session_id", HOSTILE_IDS, ids=lambda v: repr(v)[:24])
async def test_remove_of_a_hostile_id_touches_nothing_else(
    workspaces: Workspaces, tmp_path: Path, session_id: str
) -> None:
    bystander = workspaces.for_session("bystander")
    (tmp_path / "precious").write_text("x")
    workspaces.for_session(session_id)
    await workspaces.remove(session_id)
    assert (tmp_path / "precious").read_text() == "x"
    assert bystander.path.is_dir()
    assert [p.name for p in workspaces.root.iterdir()] == [bystander.path.parent.name]


async def test_remove_unlinks_a_symlinked_workspace_not_its_target(
    workspaces: Workspaces, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x")
    workspaces.root.mkdir()
    link = workspaces.root / workspace_name("evil")
    link.symlink_to(outside)
    await workspaces.remove("evil")
    assert not link.exists()
    assert not link.is_symlink()
    assert (outside / "precious").read_text() == "x"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_cleanup_removes_dead_sockets_and_probes(workspaces: Workspaces) -> None:
    ws = workspaces.for_session("s")
    socks = ws.tmp / "cc-socks"
    socks.mkdir()
    (socks / f"{_dead_pid()}.sock").write_text("")  # a socket in real life; the name counts
    (socks / "junk.sock").write_text("")
    probe = ws.tmp / "claude-0" / "fswatch-probe-AbC123"
    probe.mkdir(parents=True)
    (probe / "probe").write_text("")
    task_output = ws.tmp / "claude-0" / "-some-project"
    task_output.mkdir()
    ws.cleanup_leftovers()
    assert [p.name for p in socks.iterdir()] == ["junk.sock"]  # not named by a pid: not ours
    assert not probe.exists()
    assert task_output.is_dir()


def test_cleanup_keeps_a_live_cli_socket_and_its_probe(workspaces: Workspaces) -> None:
    ws = workspaces.for_session("s")
    socks = ws.tmp / "cc-socks"
    socks.mkdir()
    live = socks / f"{os.getpid()}.sock"
    live.write_text("")
    stale = socks / f"{_dead_pid()}.sock"
    stale.write_text("")
    probe = ws.tmp / "claude-0" / "fswatch-probe-x"
    probe.mkdir(parents=True)
    ws.cleanup_leftovers()
    assert live.exists()
    assert not stale.exists()
    assert probe.is_dir()


def test_cleanup_keeps_the_probe_of_a_live_cli_without_a_socket(workspaces: Workspaces) -> None:
    ws = workspaces.for_session("s")
    (ws.config_dir / "sessions").mkdir()
    (ws.config_dir / "sessions" / f"{os.getpid()}.json").write_text("{}")
    probe = ws.tmp / "claude-0" / "fswatch-probe-x"
    probe.mkdir(parents=True)
    ws.cleanup_leftovers()
    assert probe.is_dir()


def test_cleanup_never_follows_a_symlinked_tmp(workspaces: Workspaces, tmp_path: Path) -> None:
    ws = workspaces.for_session("s")
    victim = workspaces.for_session("victim")
    probe = victim.tmp / "claude-0" / "fswatch-probe-x"
    probe.mkdir(parents=True)
    (ws.tmp / "claude-0").symlink_to(victim.tmp / "claude-0")
    ws.cleanup_leftovers()
    assert probe.is_dir()


def test_cleanup_of_an_empty_or_missing_tmp_is_a_no_op(workspaces: Workspaces) -> None:
    ws = workspaces.for_session("s")
    ws.cleanup_leftovers()
    ws.tmp.rmdir()
    ws.cleanup_leftovers()


def test_cleanup_removes_the_session_records_of_dead_clis(workspaces: Workspaces) -> None:
    ws = workspaces.for_session("s")
    records = ws.config_dir / "sessions"
    records.mkdir()
    dead = _dead_pid()
    for name in (f"{dead}.json", f"{dead}.abc123.key", f"{os.getpid()}.json"):
        (records / name).write_text("{}")
    ws.cleanup_leftovers()
    assert [p.name for p in records.iterdir()] == [f"{os.getpid()}.json"]


async def test_a_killed_cli_leaves_nothing_after_cleanup(fake: FakeUpstreamHandle) -> None:
    with short_root() as root:
        await _kill_and_clean(Workspaces(root), fake)


async def _kill_and_clean(workspaces: Workspaces, fake: FakeUpstreamHandle) -> None:
    ws = workspaces.for_session("killed")
    before = {p.pid for p in cli_processes()}
    client = ClaudeSDKClient(cli_options(fake, ws, tools=[]))
    await client.connect()
    try:
        [cli] = [p for p in cli_processes() if p.pid not in before]
        assert (ws.tmp / "cc-socks" / f"{cli.pid}.sock").exists()
        cli.send_signal(signal.SIGKILL)
        await asyncio.to_thread(cli.wait, 10)
        left = leftovers(ws)
        assert f"cc-socks/{cli.pid}.sock" in left
        assert any(p.name.startswith(f"{cli.pid}.") for p in (ws.config_dir / "sessions").iterdir())
    finally:
        with contextlib.suppress(ClaudeSDKError):  # the CLI is gone; the client may say so
            await client.disconnect()
    ws.cleanup_leftovers()
    assert leftovers(ws) == []
    assert list((ws.config_dir / "sessions").iterdir()) == []
    assert not psutil.pid_exists(cli.pid) or psutil.Process(cli.pid).status() == "zombie"


async def test_remove_after_a_real_turn_leaves_nothing_of_the_session(
    fake: FakeUpstreamHandle,
) -> None:
    with short_root() as root:
        await _turn_then_remove(Workspaces(root), fake)


async def _turn_then_remove(workspaces: Workspaces, fake: FakeUpstreamHandle) -> None:
    ws = workspaces.for_session("real-turn")
    other = workspaces.for_session("other")
    async with cli_client(fake, ws, tools=[]) as client:
        assert result_of(await ask(client, "hello")).result == "Echo: hello"
    assert list((ws.config_dir / "projects").iterdir())  # the CLI wrote its transcript there
    await workspaces.remove("real-turn")
    assert [p.name for p in workspaces.root.iterdir()] == [other.path.parent.name]
