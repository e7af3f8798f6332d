"""SSE decoding: line ends, reads split anywhere, comments, multi-line data, `[DONE]`."""

from __future__ import annotations

from app.client.sse import DONE, SSEDecoder, SSEEvent, decode

START = b'id: 0\ndata: {"type":"start"}\n\n'
FINISH = b'id: 1\ndata: {"type":"finish"}\n\n'
STREAM = START + b": ping\n\n" + FINISH + b"data: [DONE]\n\n"
EXPECTED = [
    SSEEvent("0", '{"type":"start"}'),
    SSEEvent("1", '{"type":"finish"}'),
    SSEEvent(None, DONE),
]


def test_events_ids_and_done_are_decoded() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(STREAM) == EXPECTED
    assert decoder.comments == 1


def test_crlf_and_cr_line_ends_are_line_ends() -> None:
    assert list(decode([STREAM.replace(b"\n", b"\r\n")])) == EXPECTED
    assert list(decode([STREAM.replace(b"\n", b"\r")])) == EXPECTED


def test_reads_split_at_every_byte_give_the_same_events() -> None:
    for stream in (STREAM, STREAM.replace(b"\n", b"\r\n"), STREAM.replace(b"\n", b"\r")):
        assert list(decode(stream[i : i + 1] for i in range(len(stream)))) == EXPECTED


def test_a_multibyte_character_split_between_reads_is_kept_whole() -> None:
    raw = 'data: {"delta":"héllo ✓"}\n\n'.encode()
    cut = raw.index("✓".encode()) + 1
    assert list(decode([raw[:cut], raw[cut:]])) == [SSEEvent(None, '{"delta":"héllo ✓"}')]


def test_line_separator_inside_json_does_not_split_the_line() -> None:
    raw = 'data: {"delta":"a\u2028b\x85c"}\n\n'.encode()
    assert list(decode([raw])) == [SSEEvent(None, '{"delta":"a\u2028b\x85c"}')]


def test_data_lines_join_with_newlines_and_the_space_after_the_colon_is_optional() -> None:
    assert list(decode([b"data: one\ndata:two\n\n"])) == [SSEEvent(None, "one\ntwo")]


def test_an_event_without_data_is_no_event_and_its_id_is_dropped() -> None:
    assert list(decode([b"id: 4\n\nevent: x\n\ndata: y\n\n"])) == [SSEEvent(None, "y")]


def test_an_unfinished_last_event_is_not_dispatched() -> None:
    assert list(decode([b"id: 3\ndata: partial"])) == []
