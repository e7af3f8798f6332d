"""The embedded PostgreSQL launcher, against real postgres processes in tmp data dirs."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.devtools import embedded_postgres
from app.devtools.embedded_postgres import EmbeddedPostgres
from app.devtools.processes import (
    DataDirInUseError,
    EmbeddedServiceError,
    ServiceStartError,
    free_port,
    wait_for,
)
from tests.devtools.embedded_processes import (
    all_gone,
    assert_second_start_names_the_holder,
    family,
    holder_process,
)


def query(url: str, *statements: str) -> list[object]:
    """Run statements through SQLAlchemy + asyncpg with the URL; the last one's first column."""

    async def run() -> list[object]:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                rows: list[object] = []
                for statement in statements:
                    result = await conn.execute(text(statement))
                    rows = [row[0] for row in result] if result.returns_rows else []
                return rows
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A started server on a fresh data dir, stopped afterwards."""
    with EmbeddedPostgres(tmp_path) as server:
        yield server


def test_start_returns_an_asyncpg_url_to_the_copilot_database(
    postgres: EmbeddedPostgres,
) -> None:
    assert postgres.url == f"postgresql+asyncpg://postgres@127.0.0.1:{postgres.port}/copilot"
    assert query(postgres.url, "SELECT current_database()") == ["copilot"]
    assert query(postgres.url, "SHOW server_encoding") == ["UTF8"]
    assert query(postgres.url, "SHOW listen_addresses") == ["127.0.0.1"]


def test_restart_keeps_data_and_port(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    first_url = server.start()
    try:
        query(first_url, "CREATE TABLE notes (body text)", "INSERT INTO notes VALUES ('kept')")
    finally:
        server.stop()

    again = EmbeddedPostgres(tmp_path)
    with again:
        assert again.url == first_url
        assert query(again.url, "SELECT body FROM notes") == ["kept"]


def test_restart_picks_a_new_port_when_the_remembered_one_is_taken(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "a") as server:
        remembered = server.port
    with EmbeddedPostgres(tmp_path / "b", port=remembered), EmbeddedPostgres(tmp_path / "a") as a:
        assert a.port != remembered
    with EmbeddedPostgres(tmp_path / "a") as a:
        assert a.port != remembered  # the new port is the one remembered now


def test_second_instance_on_same_data_dir_fails_with_clear_message(tmp_path: Path) -> None:
    assert_second_start_names_the_holder(EmbeddedPostgres, tmp_path)


def test_second_instance_in_the_same_process_fails(postgres: EmbeddedPostgres) -> None:
    with pytest.raises(DataDirInUseError, match="already in use by this process"):
        EmbeddedPostgres(postgres.data_dir).start()
    assert query(postgres.url, "SELECT 1") == [1]


def test_stop_leaves_no_child_processes(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    server.start()
    assert server.pid is not None
    processes = family(server.pid)
    assert len(processes) > 1  # the postmaster and its background workers
    assert os.getpgid(server.pid) == server.pid  # its own group: a terminal Ctrl-C skips it
    server.stop()
    assert all_gone(processes)


def test_children_die_when_the_parent_is_sigkilled(tmp_path: Path) -> None:
    with holder_process(EmbeddedPostgres, tmp_path) as (holder, postmaster):
        processes = family(postmaster)
        holder.send_signal(signal.SIGKILL)
        assert wait_for(lambda: all_gone(processes), timeout=30), "postgres outlived its parent"
    with EmbeddedPostgres(tmp_path) as server:  # the lock died with the parent
        assert query(server.url, "SELECT 1") == [1]


def test_stale_postmaster_pid_after_a_crash_does_not_block_restart(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    url = server.start()
    query(url, "CREATE TABLE notes (body text)", "INSERT INTO notes VALUES ('committed')")
    assert server.pid is not None
    processes = family(server.pid)
    os.kill(server.pid, signal.SIGKILL)
    assert wait_for(lambda: all_gone(processes), timeout=30)
    server.stop()
    assert (server.pgdata / "postmaster.pid").exists()

    with EmbeddedPostgres(tmp_path) as again:
        assert query(again.url, "SELECT body FROM notes") == ["committed"]


def test_postmaster_pid_naming_a_recycled_pid_does_not_block_start(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    server.start()
    server.stop()
    # A killed server's pid now belongs to some other live process (here: pid 1).
    (server.pgdata / "postmaster.pid").write_text(f"1\n{server.pgdata}\n")
    with EmbeddedPostgres(tmp_path) as again:
        assert query(again.url, "SELECT 1") == [1]


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path) as server:
        conf = server.pgdata / "postgresql.conf"
    conf.write_text(conf.read_text() + "\nshared_buffers = 'lots'\n")
    broken = EmbeddedPostgres(tmp_path, start_timeout=20)
    with pytest.raises(ServiceStartError, match="shared_buffers") as caught:
        broken.start()
    assert str(broken.log_path) in str(caught.value)
    assert broken.pid is None


def test_explicit_busy_port_fails_clearly(postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServiceError, match=f"port {postgres.port} .* already in use"):
        EmbeddedPostgres(tmp_path / "other", port=postgres.port).start()


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback applies to root only")
def test_root_without_user_namespaces_runs_as_nobody(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    nobody = embedded_postgres._nobody()
    fallback = embedded_postgres._Runner("the nobody user", user=nobody[0], group=nobody[1])
    monkeypatch.setattr(embedded_postgres, "_runner", lambda: fallback)
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    with pytest.raises(
        EmbeddedServiceError, match=f"cannot reach .* through {re.escape(str(hidden))};"
    ):
        EmbeddedPostgres(hidden / "data").start()

    data_dir = Path(tempfile.mkdtemp(prefix="copilot-nobody-"))
    try:
        data_dir.chmod(0o711)
        with EmbeddedPostgres(data_dir, port=free_port()) as server:
            assert query(server.url, "SELECT current_user") == ["postgres"]
            assert server.pid is not None
            assert psutil.Process(server.pid).uids().effective == nobody[0]
        assert (data_dir / "postgres" / "pgdata").stat().st_uid == nobody[0]
    finally:
        shutil.rmtree(data_dir)


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback applies to root only")
def test_root_as_nobody_runs_binaries_nobody_cannot_reach_from_a_copy_made_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Regression: in a checkout under /root (0700), `nobody` could not run the wheel's
    # binaries, so embedded PostgreSQL (and this test suite) failed where user namespaces are
    # blocked. The wheel's install is copied here under a 0700 directory to stand for that.
    nobody = embedded_postgres._nobody()
    fallback = embedded_postgres._Runner("the nobody user", user=nobody[0], group=nobody[1])
    monkeypatch.setattr(embedded_postgres, "_runner", lambda: fallback)
    hidden = tmp_path / "root-home"
    hidden.mkdir(mode=0o700)
    site = embedded_postgres.postgres_bin().parents[2]
    for tree in ("embedded_postgres/pginstall", "embedded_postgres.libs"):
        shutil.copytree(site / tree, hidden / tree, symlinks=True)
    monkeypatch.setattr(
        embedded_postgres, "postgres_bin", lambda: hidden / "embedded_postgres/pginstall/bin"
    )
    data_dir = Path(tempfile.mkdtemp(prefix="copilot-nobody-"))
    try:
        data_dir.chmod(0o711)
        with EmbeddedPostgres(data_dir, port=free_port()) as server:
            assert query(server.url, "SELECT 1") == [1]
            assert server.pid is not None
            exe = Path(psutil.Process(server.pid).exe())
        assert exe.is_relative_to(data_dir)
        copied = exe.stat().st_ino
        with EmbeddedPostgres(data_dir, port=free_port()) as server:
            assert server.pid is not None
            assert Path(psutil.Process(server.pid).exe()) == exe
        assert exe.stat().st_ino == copied
    finally:
        shutil.rmtree(data_dir)


@pytest.mark.skipif(os.geteuid() != 0, reason="the fallback applies to root only")
def test_root_falls_back_to_nobody_when_user_namespaces_are_blocked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def blocked(inside: tuple[int, int]) -> list[str]:
        return ["/bin/false", "--"]  # as `unshare` fails where user namespaces are blocked

    monkeypatch.setattr(embedded_postgres, "user_namespace_argv", blocked)
    runner = embedded_postgres._runner.__wrapped__()
    assert (runner.user, runner.group) == embedded_postgres._nobody()
    assert runner.prefix == ()


def test_a_damaged_cluster_is_reported_not_replaced(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path) as server:
        pgdata = server.pgdata
    (pgdata / "PG_VERSION").unlink()
    with pytest.raises(EmbeddedServiceError, match="not a PostgreSQL cluster"):
        EmbeddedPostgres(tmp_path).start()
    assert (pgdata / "base").is_dir()


def test_an_interrupted_first_start_is_redone(tmp_path: Path) -> None:
    scratch = tmp_path / "postgres" / "pgdata.initdb"
    scratch.mkdir(parents=True)
    (scratch / "half-written").write_text("left by a killed initdb")
    with EmbeddedPostgres(tmp_path) as server:
        assert query(server.url, "SELECT 1") == [1]
    assert not scratch.exists()
