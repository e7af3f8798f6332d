"""Embedded services' processes as the launcher tests watch them: held by another, or gone."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from app.devtools.embedded_service import EmbeddedService
from app.devtools.processes import DataDirInUseError

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import importlib, json, sys
from pathlib import Path
module, name, data_dir = sys.argv[1:]
service = getattr(importlib.import_module(module), name)(Path(data_dir))
service.start()
print(json.dumps({"pid": service.pid}), flush=True)
sys.stdin.read()
"""


@contextmanager
def holder_process(
    service: type[EmbeddedService], data_dir: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A python process that starts `service` on `data_dir`; yields it and the service pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, service.__module__, service.__qualname__, str(data_dir)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=60), "the holder did not start the service in time"
        yield proc, json.loads(proc.stdout.readline())["pid"]
    finally:
        proc.kill()
        proc.wait(10)


def assert_second_start_names_the_holder(service: type[EmbeddedService], data_dir: Path) -> None:
    """A start on `data_dir` while another process runs `service` there names it and the fix."""
    with (
        holder_process(service, data_dir) as (holder, _),
        pytest.raises(DataDirInUseError) as caught,
    ):
        service(data_dir).start()
    message = str(caught.value)
    expected = f"data dir {data_dir} is in use by another copilot serve (pid {holder.pid}"
    assert expected in message, message
    assert "COPILOT_DATA_DIR" in message, message


def family(pid: int) -> list[psutil.Process]:
    """A process and all its descendants."""
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def all_gone(processes: list[psutil.Process]) -> bool:
    """Whether every process has exited (a zombie waiting for its reaper counts as exited)."""
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True
