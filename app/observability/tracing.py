"""The Langfuse client of a replica: one trace per turn, feedback as scores.

Deliberate choices, each against something the SDK would otherwise do:

- Nothing on the event loop waits on the network. Spans end into the OpenTelemetry batch
  processor's queue (a bounded deque: when it is full, spans are dropped, never waited for)
  and are exported by its worker thread every `LANGFUSE_FLUSH_INTERVAL_S`; scores go into the
  SDK's queue, posted by its own thread. `LANGFUSE_TIMEOUT_S` bounds one export, retries
  included, so a Langfuse that hangs or answers 5xx costs a thread some seconds, never a turn.
- The SDK keeps process-wide state: a singleton per public key (`LangfuseResourceManager`)
  and, unless given one, the global OpenTelemetry tracer provider, which can be set only once
  per process. This client brings its own provider (nothing global is set) and removes its
  singleton when it closes, so each app instance (a test's, a restarted lifespan's) starts
  afresh instead of reusing one already shut down.
- The span exporter is built here (the endpoint, Basic auth and gzip the SDK would use) and
  wrapped to count failed exports in `copilot_tracer_export_failures_total`.
- `close()` flushes on a daemon thread and waits at most `LANGFUSE_TIMEOUT_S` for it: a
  Langfuse that does not answer cannot hold the shutdown past its grace period.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from langfuse import Langfuse
from langfuse._client.resource_manager import LangfuseResourceManager
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import Counter

log = logging.getLogger(__name__)

EXPORT_FAILURES = Counter(
    "copilot_tracer_export_failures_total",
    "Batches of spans that could not be sent to Langfuse (down, slow, or refusing them)",
)
TRACES_PATH = "/api/public/otel/v1/traces"
FEEDBACK_SCORE = "user-feedback"


class CountingExporter(SpanExporter):
    """An exporter that counts the batches its inner exporter failed to send."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Send a batch; a failure (or an exception) is counted, never raised."""
        try:
            result = self.inner.export(spans)
        except Exception:
            log.exception("exporting %d spans to Langfuse failed", len(spans))
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            EXPORT_FAILURES.inc()
        return result

    def shutdown(self) -> None:
        """Shut the inner exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the inner exporter."""
        return self.inner.force_flush(timeout_millis)


class Tracer:
    """A Langfuse client of this app instance; `client` makes the spans."""

    def __init__(
        self, client: Langfuse, provider: TracerProvider, public_key: str, timeout_s: float
    ) -> None:
        self.client = client
        self.provider = provider
        self.timeout_s = timeout_s
        self._public_key = public_key
        self._retractions: set[asyncio.Task[None]] = set()

    @classmethod
    def open(
        cls,
        *,
        public_key: str,
        secret_key: str,
        base_url: str,
        timeout_s: float,
        flush_interval_s: float,
    ) -> Tracer:
        """A client exporting to the Langfuse at `base_url` (no network at all until a batch
        is due)."""
        base = base_url.rstrip("/")
        auth = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        exporter = OTLPSpanExporter(
            endpoint=base + TRACES_PATH,
            headers={
                "Authorization": f"Basic {auth}",
                "x-langfuse-public-key": public_key,
                "x-langfuse-ingestion-version": "4",
            },
            timeout=timeout_s,
            compression=Compression.Gzip,
        )
        provider = TracerProvider(
            resource=Resource.create({"service.name": "copilot-server"}),
            shutdown_on_exit=False,
        )
        # The SDK types `timeout` as int seconds but uses it as a float (httpx, the exporter).
        timeout: Any = timeout_s
        client = Langfuse(
            public_key=public_key,
            secret_key=secret_key,
            base_url=base,
            timeout=timeout,
            flush_interval=flush_interval_s,
            tracer_provider=provider,
            span_exporter=CountingExporter(exporter),
            media_upload_thread_count=1,
        )
        return cls(client, provider, public_key, timeout_s)

    def score_feedback(
        self, *, trace_id: str, message_id: str, rating: str, comment: str | None
    ) -> None:
        """Queue the feedback on a reply as a score of its turn's trace (one score per
        message: a changed rating replaces it in Langfuse, same id)."""
        self.client.create_score(
            name=FEEDBACK_SCORE,
            value=1.0 if rating == "up" else 0.0,
            data_type="BOOLEAN",
            trace_id=trace_id,
            score_id=feedback_score_id(trace_id, message_id),
            comment=comment,
            metadata={"message_id": message_id, "rating": rating},
        )

    def retract_feedback(self, *, trace_id: str, message_id: str) -> None:
        """Delete a reply's feedback score in Langfuse, in the background (at most
        `timeout_s`; a failure is logged: the score stays there, the rating is gone here)."""
        task = asyncio.create_task(self._delete_score(feedback_score_id(trace_id, message_id)))
        self._retractions.add(task)
        task.add_done_callback(self._retractions.discard)

    async def _delete_score(self, score_id: str) -> None:
        try:
            await asyncio.wait_for(
                self.client.async_api.scores.delete(score_id, request_options={"max_retries": 0}),
                self.timeout_s,
            )
        except Exception as exc:
            EXPORT_FAILURES.inc()
            log.warning("deleting feedback score %s in Langfuse failed: %r", score_id, exc)

    async def close(self) -> None:
        """Flush spans and scores, then stop the SDK's threads: at most `timeout_s` of
        waiting, on a thread of its own (the event loop goes on serving meanwhile)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def shut() -> None:
            try:
                self.client.shutdown()
                self.provider.shutdown()
            except Exception:
                log.exception("closing the Langfuse client failed")
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    loop.call_soon_threadsafe(_set_done, done)

        if self._retractions:
            await asyncio.wait(self._retractions, timeout=self.timeout_s)
            for task in self._retractions:
                task.cancel()
        thread = threading.Thread(target=shut, name="langfuse-close", daemon=True)
        thread.start()
        timeout = self.timeout_s + 1.0
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            log.warning("Langfuse did not take the last spans within %.1fs: dropped", timeout)
        finally:
            self._forget_singleton()

    def _forget_singleton(self) -> None:
        """Drop the SDK's process-wide instance for this key, if it is ours."""
        with LangfuseResourceManager._lock:
            instances = LangfuseResourceManager._instances
            if instances.get(self._public_key) is self.client._resources:
                del instances[self._public_key]


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def feedback_score_id(trace_id: str, message_id: str) -> str:
    """The id of a reply's feedback score: the same for every rating of that reply."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"copilot-feedback:{trace_id}:{message_id}").hex
