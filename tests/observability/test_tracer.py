"""The Langfuse client leaves no process-wide state behind: app instances start afresh."""

from __future__ import annotations

import functools
import time

from langfuse._client.resource_manager import LangfuseResourceManager
from opentelemetry import trace as otel_trace

from app.devtools.langfuse_sink import SinkState, running_sink
from app.observability.tracing import Tracer
from tests.serving import wait_until


def _open(base_url: str) -> Tracer:
    return Tracer.open(
        public_key="pk-lf-unit",
        secret_key="sk-lf-unit",
        base_url=base_url,
        timeout_s=1,
        flush_interval_s=0.05,
    )


async def test_a_closed_tracer_leaves_no_singleton_and_the_next_one_exports_again() -> None:
    with running_sink() as sink:
        for round_no in range(2):
            tracer = _open(sink.base_url)
            span = tracer.client.start_observation(name=f"round-{round_no}")
            span.end()
            await tracer.close()
            assert "pk-lf-unit" not in LangfuseResourceManager._instances
            wait_until(functools.partial(sink.state.trace, span.trace_id), timeout=5)
        # Nothing global was set: the OpenTelemetry API still has its default provider.
        assert isinstance(otel_trace.get_tracer_provider(), otel_trace.ProxyTracerProvider)


async def test_closing_waits_for_a_hanging_langfuse_no_longer_than_its_timeout() -> None:
    with running_sink(SinkState(mode="hang", hang_s=30)) as sink:
        tracer = _open(sink.base_url)
        tracer.client.start_observation(name="stuck").end()
        began = time.monotonic()
        await tracer.close()
        assert time.monotonic() - began < 3.5
