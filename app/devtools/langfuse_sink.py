"""A stand-in for Langfuse's ingestion endpoints: what tests and benchmarks export to.

It serves what the Langfuse SDK sends: `POST /api/public/otel/v1/traces` (OTLP protobuf,
gzipped or not), `POST /api/public/scores` (a JSON list of scores) and
`DELETE /api/public/scores/{id}`. Spans are decoded (with `opentelemetry-proto`) into plain
dicts, unless `keep=False` (a benchmark's sink only counts). `mode` makes it misbehave:
"ok", "error" (every request answers 500), "hang" (no answer for `hang_s`).

`python -m app.devtools.langfuse_sink --port 3000` runs it on its own (as `bench/relay.py
--tracing` does).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

TRACES_PATH = "/api/public/otel/v1/traces"
SCORES_PATH = "/api/public/scores"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def decode_spans(body: bytes) -> list[dict[str, Any]]:
    """The spans of an OTLP export request, as dicts (ids in hex, attributes by key)."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                spans.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex() or None,
                        "name": span.name,
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                    }
                )
    return spans


@dataclass
class SinkState:
    """What the sink received, and how it behaves."""

    mode: str = "ok"
    hang_s: float = 30.0
    keep: bool = True
    spans: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    deleted_scores: list[str] = field(default_factory=list)
    requests: int = 0
    span_count: int = 0  # spans decoded (keep=True)
    batches: int = 0  # exports taken without decoding (keep=False)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans received for one trace."""
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _answer(self, status: int, body: bytes = b"{}") -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _misbehave(self) -> bool:
        state = self.server.state
        with state.lock:
            state.requests += 1
        if state.mode == "hang":
            time.sleep(state.hang_s)
            return True
        if state.mode == "error":
            self._answer(500, b'{"message": "sink says no"}')
            return True
        return False

    def _body(self, decompress: bool = True) -> bytes:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if decompress and self.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        return raw

    def do_POST(self) -> None:
        """Spans or scores."""
        # Always read the whole body (the connection is kept alive); a counting sink does not
        # decompress spans.
        body = self._body(self.server.state.keep or self.path != TRACES_PATH)
        if self._misbehave():
            return
        state = self.server.state
        if self.path == TRACES_PATH:
            if state.keep:
                spans = decode_spans(body)
                with state.lock:
                    state.spans.extend(spans)
                    state.span_count += len(spans)
            else:
                with state.lock:
                    state.batches += 1
            self._answer(200)
        elif self.path == SCORES_PATH:
            scores = json.loads(body)
            with state.lock:
                state.scores.extend(scores if isinstance(scores, list) else [scores])
            self._answer(202, b'{"message": "Accepted"}')
        else:
            self._answer(404)

    def do_GET(self) -> None:
        """`/healthz`: the sink is up."""
        self._answer(200 if self.path == "/healthz" else 404)

    def do_DELETE(self) -> None:
        """A score taken back."""
        if self._misbehave():
            return
        if self.path.startswith(SCORES_PATH + "/"):
            with self.server.state.lock:
                self.server.state.deleted_scores.append(self.path.rsplit("/", 1)[1])
            self._answer(204, b"")
        else:
            self._answer(404)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, state: SinkState) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state


@dataclass
class RunningSink:
    """A sink serving in a thread of this process."""

    base_url: str
    state: SinkState
    server: _Server


@contextlib.contextmanager
def running_sink(state: SinkState | None = None, port: int = 0) -> Iterator[RunningSink]:
    """Serve a sink on `port` (0: a free one) until the block ends."""
    server = _Server(port, state or SinkState())
    thread = threading.Thread(target=server.serve_forever, name="langfuse-sink", daemon=True)
    thread.start()
    try:
        yield RunningSink(f"http://127.0.0.1:{server.server_port}", server.state, server)
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    """Serve a counting sink until interrupted; print what it received at exit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--keep", action="store_true", help="decode and keep the spans")
    args = parser.parse_args()
    state = SinkState(keep=args.keep)
    server = _Server(args.port, state)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print(json.dumps({"requests": state.requests, "batches": state.batches}), flush=True)


if __name__ == "__main__":
    main()
