"""Two `copilot serve` replicas on a real Redis Cluster (`COPILOT_REDIS_CLUSTER=1`): a turn, the
lease, resume and stop from the other replica, the per-user cap, and a master failing over
mid-turn (gracefully, and killed) without losing what is stored or leaving the session locked.

The cluster (3 masters, 3 replicas) is `redis_cluster` from `tests/conftest.py`; the replicas
point `REDIS_URL` at one node and discover the rest. A session id can be chosen so that its
keys live on the same master as the replicas' stop subscription (`session_on_the_stop_shard`):
failing that master over then also tests that the stop listeners follow the failover.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from app.api.auth import issue_token
from app.config import AuthSettings
from app.coord.redis import Keys
from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.coord.cluster import LocalCluster
from tests.serving import (
    Served,
    StreamResult,
    assert_well_formed,
    parse_sse,
    serve,
    start_turn_raw,
    stream,
    turns,
    upstream_env,
    wait_until,
)

PREFIX = f"clu-{uuid.uuid4().hex[:8]}"
KEYS = Keys(PREFIX)
SECRET = "cluster-test-secret-that-is-long-enough"
CAP = 2
TOKENS, SHORT = 40, "[[fake:text tokens=40 rate=80]]"  # half a second
LONG = "[[fake:text tokens=500 rate=50]]"  # 10 s: stopped by the test
FAILOVER_TOKENS, FAILOVER = 200, "[[fake:text tokens=200 rate=40]]"  # 5 s: spans a failover
# How long a client's stream may take, start to end, through a failover (the turn itself
# takes 5 s; the cluster needs about 3 s to promote a killed master's replica).
FAILOVER_BOUND_S = 45.0


def cluster_env(
    fake: FakeUpstreamHandle, database_url: str, cluster: LocalCluster, **extra: str
) -> dict[str, str]:
    """Settings for a replica on the cluster: JWT users (the cap is per user), quick upkeep,
    and a lease (10 s) that outlasts a failover (about 3 s here)."""
    settings = {
        "COPILOT_REDIS_CLUSTER": "1",
        "COPILOT_REDIS_KEY_PREFIX": PREFIX,
        "COPILOT_JWT_SECRET": SECRET,
        "COPILOT_MAX_ACTIVE_TURNS_PER_USER": str(CAP),
        "COPILOT_HEARTBEAT_S": "0.5",
        "COPILOT_FLUSH_INTERVAL_S": "0.2",
        "COPILOT_LEASE_TTL_S": "10",
        "COPILOT_REAP_INTERVAL_S": "0.5",
        # Small database pools: up to three servers share the test Postgres with other suites.
        "COPILOT_DB_POOL_SIZE": "2",
        "COPILOT_DB_MAX_OVERFLOW": "4",
        "COPILOT_DB_TURN_POOL_SIZE": "4",
    }
    return upstream_env(fake.base_url, database_url, cluster.url, **{**settings, **extra})


@pytest.fixture(scope="module")
def cluster_replicas(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_cluster: LocalCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Served, Served]]:
    """Two replicas on the cluster. REAPER: its cluster test goes at the end of this module
    (see the marked section there)."""
    env = cluster_env(fake, database_url, redis_cluster)
    with (
        serve(env, tmp_path_factory.mktemp("a")) as a,
        serve(env, tmp_path_factory.mktemp("b")) as b,
    ):
        yield a, b


@pytest.fixture
def store(redis_cluster: LocalCluster) -> Iterator[redis.RedisCluster]:
    client = redis_cluster.client()
    yield client
    client.close()


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def _auth(user: str) -> dict[str, str]:
    token = issue_token(AuthSettings(jwt_secret=SecretStr(SECRET)), user)
    return {"Authorization": f"Bearer {token}"}


def client_of(served: Served, user: str) -> httpx.Client:
    return httpx.Client(base_url=served.base_url, headers=_auth(user), timeout=30)


def session_on(cluster: LocalCluster, master: int) -> str:
    """A new session id whose keys live on `master`."""
    while True:
        sid = f"clu-{uuid.uuid4().hex[:8]}"
        if cluster.shard_of(KEYS.session_lease(sid)).master == master:
            return sid


def session_on_the_stop_shard(cluster: LocalCluster) -> str:
    """A session on the master the replicas' stop listeners subscribe on (the slot of the
    stop pattern's hash tag): its failover moves both the session's keys and the listeners."""
    return session_on(cluster, cluster.shard_of(KEYS.stop_pattern()).master)


def stored_messages(http: httpx.Client, sid: str) -> list[dict[str, Any]]:
    answer = http.get(f"/api/v1/sessions/{sid}/messages")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["messages"])


def text_of(message: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in message["parts"] if p["type"] == "text")


def test_a_turn_on_the_cluster_completes_and_is_stored(
    cluster_replicas: tuple[Served, Served],
) -> None:
    a, b = cluster_replicas
    user, sid = _user(), f"clu-{uuid.uuid4().hex[:8]}"
    with client_of(a, user) as http:
        result = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": SHORT})
    assert_well_formed(result)
    assert result.chunks[-1]["finishReason"] == "stop"
    assert len(result.text.split()) == TOKENS
    with client_of(b, user) as http:
        assert [t["status"] for t in turns(http, sid)] == ["completed"]
        question, answer = stored_messages(http, sid)
    assert question["role"] == "user"
    assert answer["role"] == "assistant"
    assert text_of(answer) == result.text


def test_the_lease_is_held_on_the_cluster_during_a_turn_and_released_after(
    cluster_replicas: tuple[Served, Served], store: redis.RedisCluster
) -> None:
    a, _ = cluster_replicas
    user, sid = _user(), f"clu-{uuid.uuid4().hex[:8]}"
    lease = KEYS.session_lease(sid)
    sock = start_turn_raw(a, sid, LONG, _auth(user))
    try:
        wait_until(lambda: store.exists(lease))
        assert store.pttl(lease) > 0
        with client_of(a, user) as http:
            assert http.post(f"/api/v1/chat/{sid}/stop").status_code == 202
    finally:
        sock.close()
    wait_until(lambda: not store.exists(lease))


def test_resume_on_the_other_replica_replays_the_whole_turn_from_the_cluster(
    cluster_replicas: tuple[Served, Served],
) -> None:
    a, b = cluster_replicas
    user, sid = _user(), f"clu-{uuid.uuid4().hex[:8]}"
    sock = start_turn_raw(a, sid, SHORT, _auth(user))
    try:
        with client_of(b, user) as http:
            resumed = stream(http, "GET", f"/api/v1/chat/{sid}/stream")
    finally:
        sock.close()
    assert_well_formed(resumed)
    assert resumed.chunks[-1]["finishReason"] == "stop"
    assert len(resumed.text.split()) == TOKENS


def test_stop_sent_to_the_other_replica_stops_the_turn_and_the_next_message_is_accepted(
    cluster_replicas: tuple[Served, Served],
) -> None:
    a, b = cluster_replicas
    user, sid = _user(), f"clu-{uuid.uuid4().hex[:8]}"
    sock = start_turn_raw(a, sid, LONG, _auth(user))
    try:
        with client_of(b, user) as http:
            wait_until(lambda: http.get(f"/api/v1/sessions/{sid}").json()["status"] == "running")
            assert http.post(f"/api/v1/chat/{sid}/stop").status_code == 202
            follow = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": SHORT})
            statuses = [t["status"] for t in turns(http, sid)]
    finally:
        sock.close()
    assert_well_formed(follow)
    assert statuses == ["stopped", "completed"]


def test_a_second_message_during_a_turn_is_refused_by_the_lease(
    cluster_replicas: tuple[Served, Served],
) -> None:
    a, b = cluster_replicas
    user, sid = _user(), f"clu-{uuid.uuid4().hex[:8]}"
    sock = start_turn_raw(a, sid, LONG, _auth(user))
    try:
        with client_of(b, user) as http:
            wait_until(lambda: http.get(f"/api/v1/sessions/{sid}").json()["status"] == "running")
            second = http.post("/api/v1/chat", json={"id": sid, "message": "again"})
            assert second.status_code == 409, second.text
            assert second.json()["error"]["code"] == "turn_in_progress"
            assert http.post(f"/api/v1/chat/{sid}/stop").status_code == 202
    finally:
        sock.close()


def test_the_per_user_cap_holds_on_the_cluster(
    cluster_replicas: tuple[Served, Served], store: redis.RedisCluster
) -> None:
    a, b = cluster_replicas
    alice = _user()
    sids = [f"cap-{n}-{uuid.uuid4().hex[:8]}" for n in range(CAP + 1)]
    socks = [start_turn_raw((a, b)[n % 2], sids[n], LONG, _auth(alice)) for n in range(CAP)]
    try:
        with client_of(a, alice) as http:
            wait_until(lambda: len(store.zrange(KEYS.user_turns(alice), 0, -1)) == CAP)
            refused = http.post("/api/v1/chat", json={"id": sids[CAP], "message": "hello"})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_turns"
            assert http.get(f"/api/v1/sessions/{sids[CAP]}").status_code == 404
        with client_of(b, _user()) as http:  # another user is not counted against alice
            other = stream(http, "POST", "/api/v1/chat", json={"id": sids[CAP], "message": SHORT})
        assert_well_formed(other)
        with client_of(b, alice) as http:
            for sid in sids[:CAP]:
                assert http.post(f"/api/v1/chat/{sid}/stop").status_code == 202
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: store.zrange(KEYS.user_turns(alice), 0, -1) == [])


# -- failovers ----------------------------------------------------------------------------------


def _through_a_failover(
    owner: Served, follower: Served, cluster: LocalCluster, fail_over: Callable[[str], None]
) -> tuple[str, str, StreamResult, StreamResult, float]:
    """Start a turn on `owner`, on the stop listeners' shard; once it streams (as seen through
    a resume on `follower`, from the EventLog), `fail_over(its lease key)`; read both streams
    to their end. (session, user, the POST's stream, the resumed one, seconds the POST took)."""
    user, sid = _user(), session_on_the_stop_shard(cluster)
    with ThreadPoolExecutor(1) as pool, client_of(owner, user) as posting:
        started = time.monotonic()

        def post() -> tuple[StreamResult, float]:
            result = stream(posting, "POST", "/api/v1/chat", json={"id": sid, "message": FAILOVER})
            return result, time.monotonic() - started

        posted: Future[tuple[StreamResult, float]] = pool.submit(post)
        with client_of(follower, user) as http:
            wait_until(lambda: http.get(f"/api/v1/sessions/{sid}").json()["status"] == "running")
            with http.stream("GET", f"/api/v1/chat/{sid}/stream") as response:
                body = b""
                pieces = response.iter_raw()
                while body.count(b'"text-delta"') < 10:
                    body += next(pieces)
                fail_over(KEYS.session_lease(sid))
                for piece in pieces:
                    body += piece
                headers, status = response.headers, response.status_code
        post_result, took = posted.result(timeout=FAILOVER_BOUND_S)
    resumed = StreamResult(status, headers, *parse_sse(body), body)
    return sid, user, post_result, resumed, took


def _assert_nothing_lost(
    http: httpx.Client, sid: str, posted: StreamResult, resumed: StreamResult, took: float
) -> None:
    """Both streams ended cleanly (`finish`, `[DONE]`) within the bound, the turn completed or
    ended with a retryable error; Postgres holds the question and the answer as streamed, the
    turn is not left running, and the next message on the session runs."""
    assert_well_formed(posted)
    assert took < FAILOVER_BOUND_S
    if posted.error is None:
        assert posted.chunks[-1]["finishReason"] == "stop"
        assert len(posted.text.split()) == FAILOVER_TOKENS
    else:
        assert posted.error["retryable"] is True, posted.error
    # The resume followed the EventLog through the failover, with nothing twice and no gap,
    # or was closed from Postgres where it stood.
    assert_well_formed(resumed)
    assert posted.text.startswith(resumed.text)
    [turn] = turns(http, sid)
    assert turn["status"] == ("completed" if posted.error is None else "interrupted")
    question, answer = stored_messages(http, sid)
    assert text_of(question) == FAILOVER
    if turn["reaped_by"] is None:
        assert text_of(answer) == posted.text
    else:
        # Taken for dead while Redis was away, its turn was recorded by a reaper, whose
        # record stands (the owner's late final write adds only its usage): the reply as
        # the EventLog or the last partial write had it, which the client saw a prefix of.
        assert text_of(answer)
        assert posted.text.startswith(text_of(answer))
    after = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": SHORT})
    assert_well_formed(after)
    assert after.chunks[-1]["finishReason"] == "stop"


def _assert_a_stop_reaches_the_other_replica(
    replicas: tuple[Served, Served], cluster: LocalCluster
) -> None:
    """A stop sent to B stops a turn on A (after the listeners' node failed over)."""
    a, b = replicas
    user, sid = _user(), session_on_the_stop_shard(cluster)
    sock = start_turn_raw(a, sid, LONG, _auth(user))
    try:
        with client_of(b, user) as http:
            wait_until(lambda: http.get(f"/api/v1/sessions/{sid}").json()["status"] == "running")
            assert http.post(f"/api/v1/chat/{sid}/stop").status_code == 202
            # Stopped on A, not merely run out (the turn takes 10 s; a stop waits at most 10 s).
            assert [t["status"] for t in turns(http, sid)] == ["stopped"]
    finally:
        sock.close()


def test_a_master_handing_over_mid_turn_loses_nothing_and_leaves_the_session_free(
    cluster_replicas: tuple[Served, Served], redis_cluster: LocalCluster
) -> None:
    a, b = cluster_replicas

    def hand_over(key: str) -> None:
        redis_cluster.failover(key)

    sid, user, posted, resumed, took = _through_a_failover(a, b, redis_cluster, hand_over)
    with client_of(b, user) as http:
        _assert_nothing_lost(http, sid, posted, resumed, took)
    # A handover (`CLUSTER FAILOVER`) loses no write: the turn went on, the resume saw it all.
    assert posted.error is None, posted.error
    assert resumed.text == posted.text
    _assert_a_stop_reaches_the_other_replica(cluster_replicas, redis_cluster)


def test_a_master_killed_mid_turn_loses_nothing_stored_and_leaves_the_session_free(
    cluster_replicas: tuple[Served, Served], redis_cluster: LocalCluster
) -> None:
    """SIGKILL the master of the session's slot (also the node the stop listeners subscribed
    on, unless an earlier failover moved them): its replica takes over after the node timeout,
    about 3 s. The lease (10 s) outlives that."""
    a, b = cluster_replicas
    killed: list[int] = []

    def kill(key: str) -> None:
        old, new = redis_cluster.kill_master_of(key)
        killed.append(old)
        redis_cluster.wait_promoted(key, new)

    try:
        sid, user, posted, resumed, took = _through_a_failover(a, b, redis_cluster, kill)
        with client_of(b, user) as http:
            _assert_nothing_lost(http, sid, posted, resumed, took)
        _assert_a_stop_reaches_the_other_replica(cluster_replicas, redis_cluster)
    finally:
        for port in killed:  # it rejoins as a replica: the cluster is whole for the next test
            redis_cluster.restart(port)


def test_a_turn_whose_lease_expires_while_its_master_is_down_ends_retryable_and_stored(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_cluster: LocalCluster,
    cluster_replicas: tuple[Served, Served],
    tmp_path: Path,
) -> None:
    """With a lease shorter than the failover, the promoted replica has let it expire: the
    owner finds it gone and stops the turn as `interrupted` (retryable), stored as streamed."""
    _, b = cluster_replicas
    env = cluster_env(fake, database_url, redis_cluster, COPILOT_LEASE_TTL_S="1")
    killed: list[int] = []

    def kill(key: str) -> None:
        old, new = redis_cluster.kill_master_of(key)
        killed.append(old)
        redis_cluster.wait_promoted(key, new)

    try:
        with serve(env, tmp_path) as owner:
            sid, user, posted, resumed, took = _through_a_failover(owner, b, redis_cluster, kill)
            assert "lost the session lease" in owner.log()
        assert posted.error is not None
        assert posted.error["code"] == "interrupted"
        with client_of(b, user) as http:
            _assert_nothing_lost(http, sid, posted, resumed, took)
    finally:
        for port in killed:
            redis_cluster.restart(port)


def test_a_message_sent_while_its_master_is_down_is_503_and_leaves_nothing_behind(
    cluster_replicas: tuple[Served, Served], redis_cluster: LocalCluster, store: redis.RedisCluster
) -> None:
    """Between a master's death and its replica's promotion the session's lease cannot be
    taken: `POST /chat` answers 503 (retryable), having stored nothing and given the user's
    slot back; once the replica has taken over, the same message is accepted."""
    a, _ = cluster_replicas
    user, sid = _user(), f"clu-{uuid.uuid4().hex[:8]}"
    body = {"id": sid, "message": SHORT}
    old, new = redis_cluster.kill_master_of(KEYS.session_lease(sid))
    try:
        with client_of(a, user) as http:
            refused = http.post("/api/v1/chat", json=body)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "dependency_unavailable"
            assert http.get(f"/api/v1/sessions/{sid}").status_code == 404
            redis_cluster.wait_promoted(KEYS.session_lease(sid), new)
            assert store.zrange(KEYS.user_turns(user), 0, -1) == []  # (maybe on that master)
            accepted = stream(http, "POST", "/api/v1/chat", json=body)
        assert_well_formed(accepted)
        assert accepted.chunks[-1]["finishReason"] == "stop"
    finally:
        redis_cluster.restart(old)


# -- the reaper on the cluster ------------------------------------------------------------------


def test_the_reaper_records_a_dead_replicas_turn_and_closes_its_log_on_the_cluster(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_cluster: LocalCluster,
    cluster_replicas: tuple[Served, Served],
    tmp_path: Path,
    store: redis.RedisCluster,
) -> None:
    _, b = cluster_replicas
    user, sid = _user(), f"clu-{uuid.uuid4().hex[:8]}"
    # The doomed replica's lease lives 1 s: the survivors' reapers find the orphan soon after.
    env = cluster_env(fake, database_url, redis_cluster, COPILOT_LEASE_TTL_S="1")
    with serve(env, tmp_path) as doomed:
        sock = start_turn_raw(doomed, sid, LONG, _auth(user))
        with client_of(b, user) as http:
            wait_until(
                lambda: http.get(f"/api/v1/sessions/{sid}").json().get("status") == "running"
            )
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(10)
        sock.close()
    with client_of(b, user) as http:
        [turn] = wait_until(
            lambda: [t for t in turns(http, sid) if t["status"] == "interrupted"], timeout=30
        )
        assert turn["reaped_by"] is not None
        assert turn["error_code"] == "interrupted"
        _, answer = stored_messages(http, sid)
        assert answer["parts"][-1]["type"] == "data-error"
        assert http.get(f"/api/v1/sessions/{sid}").json()["active_turn_id"] is None
        # Its EventLog ends with the reaper's closing entry; its lease is gone.
        last = store.xrange(KEYS.turn_events(sid, turn["id"]))[-1][1]  # (decoded strings)
        assert "c" in last
        assert '"finish"' in last["d"]
        assert not store.exists(KEYS.session_lease(sid))
        after = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": SHORT})
    assert_well_formed(after)
    assert after.chunks[-1]["finishReason"] == "stop"
