"""Server-Sent Events decoding, incremental: bytes in, events out.

Written to the SSE specification rather than to our server's exact framing: lines may end in
CRLF, CR or LF (a CRLF split across two reads is one line end: a CR ends its line at once and
an LF right after it is skipped), comments (`: ping`) are
counted and dropped, several `data:` lines join with newlines, and an event without data is
no event. Lines are split on those three line ends only: `str.splitlines` would also split on
U+2028 and friends, which JSON leaves unescaped inside strings.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")

DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its `id:` (None when it had none) and its joined `data:`."""

    id: str | None
    data: str


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the events completed by them."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._after_cr = False
        self.comments = 0

    def feed(self, raw: bytes) -> list[SSEEvent]:
        """The events that `raw` completes, in order."""
        text = self._text.decode(raw)
        if self._after_cr and text:
            text = text.removeprefix("\n")  # the second half of a CRLF split between reads
            self._after_cr = False
        buffer = self._buffer + text
        events: list[SSEEvent] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            event = self._line(buffer[start : match.start()])
            start = match.end()
            if event is not None:
                events.append(event)
        if start and start == len(buffer) and buffer.endswith("\r"):
            self._after_cr = True
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._id = None
                return None
            event = SSEEvent(self._id, "\n".join(self._data))
            self._data, self._id = [], None
            return event
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None


def decode(chunks: Iterable[bytes], decoder: SSEDecoder | None = None) -> Iterator[SSEEvent]:
    """The events of a byte stream (an unfinished last event is dropped)."""
    decoder = decoder or SSEDecoder()
    for raw in chunks:
        yield from decoder.feed(raw)
