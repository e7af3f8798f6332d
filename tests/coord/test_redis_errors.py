"""Which Redis failures are worth trying again: the ones a restart or a failover explains."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    ConnectionError,
    DataError,
    MovedError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from app.coord.redis import REDIS_ERRORS, is_transient


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionError("Error 111 connecting to 127.0.0.1:7000"),
        TimeoutError("Timeout reading from socket"),
        OSError("connection reset"),
        ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"),
        ResponseError("LOADING Redis is loading the dataset in memory"),
        ResponseError("READONLY You can't write against a read only replica."),
        ClusterDownError("The cluster is down"),
        TryAgainError("Multiple keys request during rehashing of slot"),
        SlotNotCoveredError('Slot "1320" is not covered by the cluster.'),
        RedisClusterException("Redis Cluster cannot be connected."),
    ],
)
def test_a_failure_a_failover_explains_is_transient(exc: BaseException) -> None:
    assert isinstance(exc, REDIS_ERRORS)
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ResponseError("ERR Error running script"),
        AuthenticationError("invalid username-password pair"),
        DataError("Invalid input of type: 'NoneType'"),
        MovedError("3999 127.0.0.1:6381"),  # redis-py follows these itself
    ],
)
def test_a_failure_that_would_fail_again_is_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)
