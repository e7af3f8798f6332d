"""The Langfuse client of a replica: one trace per turn, feedback as scores.

Deliberate choices, each against something the SDK would otherwise do:

- Nothing on the event loop makes a span. A turn's observer records plain facts and, once
  the turn has ended, `submit`s a build: the `Builder` thread runs the queued builds every
  `LANGFUSE_FLUSH_INTERVAL_S`, and `emit` ends each span, already finished and with its
  recorded times, into the provider's span processors (the SDK's tracer and its per-value
  attribute checks are bypassed: the attributes are those the SDK would set, checked once
  when recorded). `close()` runs the builds still queued before the last flush.
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
- The span exporter is built here (the endpoint, Basic auth and gzip the SDK would use;
  `LANGFUSE_OTEL_COMPRESSION=none` turns gzip off for a Langfuse close by) and wrapped to
  count failed exports in `copilot_tracer_export_failures_total`. It encodes with
  `app/observability/otlp.py` (the same bytes as OpenTelemetry's encoder, a fraction of its
  CPU). The SDK's export-stage media step (every span cloned and scanned for base64 data
  URIs) runs only on the spans that may hold media (`MediaWhereItMayBe`).
- Measured (the CPU of every thread per traced turn of bench/relay.py's shape, 200 turns at
  once, exporting to the stand-in Langfuse): 670 µs before (410 µs of it on the event loop,
  through the SDK's wrappers), about 150 µs after: 35 µs recording on the loop, 16 µs
  building, about 90 µs exporting (encoding 30, gzip 20, the rest the request and the media
  test).
- `close()` flushes on a daemon thread and waits at most `LANGFUSE_TIMEOUT_S` for it: a
  Langfuse that does not answer cannot hold the shutdown past its grace period.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import logging
import random
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langfuse import Langfuse
from langfuse._client.attributes import LangfuseOtelSpanAttributes
from langfuse._client.resource_manager import LangfuseResourceManager
from langfuse._client.span_exporter import (
    LangfuseTransformingSpanExporter,
    _may_contain_serialized_media,
)
from langfuse._client.span_processor import LangfuseSpanProcessor
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from prometheus_client import Counter

from app.observability.otlp import OTLPExporter

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


class MediaWhereItMayBe(SpanExporter):
    """The SDK's export-stage media step (`LangfuseTransformingSpanExporter`: every span
    cloned, every attribute scanned, base64 data URIs uploaded and replaced by references)
    for the spans that may hold media only, by the SDK's own test of a value; the others go
    straight to `inner`. Measured: the step cost as much as a third of the OTLP export."""

    def __init__(self, transforming: SpanExporter, inner: SpanExporter) -> None:
        self.transforming = transforming
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Send the plain spans as they are, the others through the media step."""
        plain: list[ReadableSpan] = []
        media: list[ReadableSpan] = []
        for span in spans:
            (media if _may_hold_media(span) else plain).append(span)
        result = SpanExportResult.SUCCESS
        if media:
            result = self.transforming.export(media)
        if plain and self.inner.export(plain) is not SpanExportResult.SUCCESS:
            result = SpanExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        """Shut the SDK's exporter down (it shuts `inner` down)."""
        self.transforming.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the SDK's exporter (it flushes `inner`)."""
        return self.transforming.force_flush(timeout_millis)


def _may_hold_media(span: ReadableSpan) -> bool:
    for value in (span.attributes or {}).values():
        if isinstance(value, str):
            if _may_contain_serialized_media(value):
                return True
        elif isinstance(value, tuple | list) and any(
            isinstance(item, str) and _may_contain_serialized_media(item) for item in value
        ):
            return True
    return False


class _Resource(Resource):
    """A resource whose hash is computed once: the OTLP encoder hashes the resource of
    every span it encodes (a JSON dump of its attributes each time)."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(dict(resource.attributes), resource.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other)


class Builder:
    """A daemon thread that runs the queued builds (a finished turn's spans) every
    `interval_s`, off the event loop; `drain()` runs what is queued in the caller."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._queue: collections.deque[Callable[[], None]] = collections.deque()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, build: Callable[[], None]) -> None:
        """Queue a build (never blocks; the thread starts with the first one)."""
        self._queue.append(build)
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopped:
                    self._thread = threading.Thread(
                        target=self._run, name="langfuse-build", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.interval_s)
            self.drain()

    def drain(self) -> None:
        """Run every queued build now, in this thread; a failing one is logged."""
        while True:
            try:
                build = self._queue.popleft()
            except IndexError:
                return
            try:
                build()
            except Exception:
                log.exception("building a trace for Langfuse failed")

    def stop(self, timeout_s: float) -> None:
        """Stop the thread after its last drain (waiting at most `timeout_s`), then run
        whatever is still queued here."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout_s)
        self.drain()


# What the SDK's tracer gives a span it samples (ParentBased(ALWAYS_ON): all of them).
_FLAGS = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_UNSET = Status(StatusCode.UNSET)


@dataclass(slots=True)
class Recorded:
    """A span to make: its Langfuse attributes, its times (epoch ns), its parent (an index
    into the same list, recorded before it; None for the root), `error` a 1-tuple of the
    status description when its status is ERROR."""

    name: str
    parent: int | None
    attributes: dict[str, Any]
    start: int
    end: int
    error: tuple[str | None] | None = None


class Tracer:
    """A Langfuse client of this app instance: `client` for scores (and spans made through
    the SDK), `otel` the OpenTelemetry tracer behind it, `submit` to make spans later on the
    builder thread, with the trace ids `new_trace_id` hands out."""

    def __init__(
        self,
        client: Langfuse,
        provider: TracerProvider,
        public_key: str,
        timeout_s: float,
        flush_interval_s: float = 1.0,
    ) -> None:
        self.client = client
        self.provider = provider
        self.timeout_s = timeout_s
        self.ids = RandomIdGenerator()
        self.otel: otel_trace.Tracer = client._otel_tracer
        # What the SDK's wrappers add to every observation, when the client has them.
        self.defaults: dict[str, str] = {}
        if client._environment is not None:
            self.defaults[LangfuseOtelSpanAttributes.ENVIRONMENT] = client._environment
        if client._release is not None:
            self.defaults[LangfuseOtelSpanAttributes.RELEASE] = client._release
        self.builder = Builder(flush_interval_s)
        self._public_key = public_key
        self._retractions: set[asyncio.Task[None]] = set()

    @staticmethod
    def new_trace_id() -> int:
        """A random trace id (as OpenTelemetry makes them)."""
        trace_id = random.getrandbits(128)
        while not trace_id:
            trace_id = random.getrandbits(128)
        return trace_id

    def emit(self, trace_id: int, records: Sequence[Recorded]) -> None:
        """End the spans of one trace into the provider's span processors (the SDK's batch
        processor: queued, exported by its thread), children before their parents.

        What the SDK's tracer would do, without what this needs none of: each span is made
        ended (a `ReadableSpan`), with the ids, flags, resource and instrumentation scope the
        tracer gives its spans, and the attribute the SDK's processor adds when one starts
        (`is_app_root` on the root: it has no parent). Its attributes are checked once, when
        they are recorded, not value by value again."""
        otel: Any = self.otel
        scope, info = otel._instrumentation_scope, otel.instrumentation_info
        resource = self.provider.resource
        processor = self.provider._active_span_processor
        contexts: list[SpanContext] = []
        spans: list[ReadableSpan] = []
        for record in records:
            span_id = self.ids.generate_span_id()
            context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=_FLAGS)
            contexts.append(context)
            attributes = record.attributes
            if record.parent is None:
                attributes[LangfuseOtelSpanAttributes.IS_APP_ROOT] = True
            spans.append(
                ReadableSpan(
                    name=record.name,
                    context=context,
                    parent=None if record.parent is None else contexts[record.parent],
                    resource=resource,
                    attributes=attributes,
                    kind=SpanKind.INTERNAL,
                    instrumentation_info=info,
                    instrumentation_scope=scope,
                    status=_UNSET
                    if record.error is None
                    else Status(StatusCode.ERROR, description=record.error[0]),
                    start_time=record.start,
                    end_time=record.end,
                )
            )
        for span in reversed(spans):  # the root, last, closes the trace
            processor.on_end(span)

    def submit(self, build: Callable[[], None]) -> None:
        """Run `build` on the builder thread (within `flush_interval_s`)."""
        self.builder.submit(build)

    def drain(self) -> None:
        """Run the queued builds now, in the caller (tests)."""
        self.builder.drain()

    @classmethod
    def open(
        cls,
        *,
        public_key: str,
        secret_key: str,
        base_url: str,
        timeout_s: float,
        flush_interval_s: float,
        compression: str = "gzip",
    ) -> Tracer:
        """A client exporting to the Langfuse at `base_url` (no network at all until a batch
        is due)."""
        base = base_url.rstrip("/")
        auth = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        exporter = OTLPExporter(
            endpoint=base + TRACES_PATH,
            headers={
                "Authorization": f"Basic {auth}",
                "x-langfuse-public-key": public_key,
                "x-langfuse-ingestion-version": "4",
            },
            timeout=timeout_s,
            compression=Compression.Gzip if compression == "gzip" else Compression.NoCompression,
        )
        provider = TracerProvider(
            resource=_Resource(Resource.create({"service.name": "copilot-server"})),
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
        _scan_only_what_may_be_media(provider)
        return cls(client, provider, public_key, timeout_s, flush_interval_s)

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
                self.builder.stop(self.timeout_s)
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


def _scan_only_what_may_be_media(provider: TracerProvider) -> None:
    """Put `MediaWhereItMayBe` around the exporter of the SDK's span processor (left as it
    is, with a warning, if the SDK is not built as this expects)."""
    processors = getattr(provider._active_span_processor, "_span_processors", ())
    for processor in processors:
        batch = getattr(processor, "_batch_processor", None)
        exporter = getattr(batch, "_exporter", None)
        if isinstance(processor, LangfuseSpanProcessor) and isinstance(
            exporter, LangfuseTransformingSpanExporter
        ):
            batch._exporter = MediaWhereItMayBe(exporter, exporter._exporter)  # type: ignore[union-attr]
            return
    log.warning("Langfuse SDK: no media step found to narrow; every span goes through it")


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def feedback_score_id(trace_id: str, message_id: str) -> str:
    """The id of a reply's feedback score: the same for every rating of that reply."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"copilot-feedback:{trace_id}:{message_id}").hex
