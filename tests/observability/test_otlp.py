"""The hand-written OTLP encoding decodes to what OpenTelemetry's encoder makes."""

from __future__ import annotations

import asyncio
import gc
import time

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from app.observability import otlp
from app.observability.tracing import Recorded, Tracer


def _spans() -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    tracer = Tracer.open(
        public_key="pk-lf-otlp",
        secret_key="sk-lf-otlp",
        base_url="http://127.0.0.1:9",
        timeout_s=0.2,
        flush_interval_s=60,
    )
    tracer.provider.add_span_processor(SimpleSpanProcessor(memory))
    sdk = tracer.client.start_observation(
        name="sdk-made", input={"a": [1, 2.5, True, None]}, metadata={"x": "é" * 300}
    )
    sdk.update(level="ERROR", status_message="went wrong")
    sdk.end()
    now = time.time_ns()
    records = [
        Recorded("root", None, {"s": "x", "tags": ("a", "b"), "n": 7, "f": 0.5}, now, now + 9),
        Recorded("child", 0, {"long": "y" * 5000, "neg": -3}, now + 1, now + 2, ("bad",)),
        Recorded("grandchild", 1, {}, now + 1, now + 1, (None,)),
    ]
    tracer.emit(12345678901234567890, records)
    plain = TracerProvider()
    plain.add_span_processor(SimpleSpanProcessor(memory))
    other = plain.get_tracer("other", "1.0")
    parent = other.start_span("plain-parent")
    child = other.start_span("plain-child", context=set_span_in_context(parent))
    child.set_status(Status(StatusCode.OK))
    child.end()
    parent.end()
    spans = list(memory.get_finished_spans())
    # Closed as the lifespan closes it: a Langfuse client left open keeps threads, and
    # OpenTelemetry's fork hook would start one in every child this process forks.
    asyncio.run(tracer.close())
    del tracer, sdk
    gc.collect()  # its span processor's fork hook holds it weakly: let it go now
    return spans


def test_the_encoding_decodes_to_what_opentelemetry_encodes() -> None:
    spans = _spans()
    assert len(spans) == 6
    encoded = otlp.encode(spans)
    assert encoded is not None
    assert ExportTraceServiceRequest.FromString(encoded) == encode_spans(spans)


def test_spans_with_events_are_left_to_opentelemetry() -> None:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    span = provider.get_tracer("t").start_span("with-event")
    span.add_event("something")
    span.end()
    assert otlp.encode(memory.get_finished_spans()) is None
