"""Log paging: the server's byte pages turned into exact text (exact_chunk), and the walk over a stream (LogCursor)."""

from __future__ import annotations

import pytest

from airflow_provider_scriptrunner.client.models import LogChunk, LogPage
from airflow_provider_scriptrunner.client.paging import LogCursor, exact_chunk, utf8_size

EURO = "€".encode()  # 3 bytes: E2 82 AC


def page(
    blob: bytes, offset: int, limit: int, *, total: int | None = None, truncated: bool = False
) -> LogPage:
    """A page of ``blob`` as script-runner serves it: the byte range decoded on its own (U+FFFD where it cuts)."""
    end = min(len(blob), offset + limit)
    return LogPage(
        job_id="j",
        stream="stdout",
        offset=offset,
        next_offset=end,
        total_size=len(blob) if total is None else total,
        truncated=truncated,
        data=blob[offset:end].decode("utf-8", "replace"),
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [("", 0), ("plain ascii", 11), ("é", 2), ("中", 3), ("😀", 4), ("a€😀", 8), ("\ud800", 3)],
)
def test_utf8_size(text, size):
    assert utf8_size(text) == size


# -- exact_chunk ---------------------------------------------------------------------------------


def test_a_page_that_cuts_a_character_ends_before_it():
    blob = b"ab" + EURO  # 5 bytes; a 4-byte page holds 2 of the euro sign's 3
    assert page(blob, 0, 4).data == "ab\ufffd"
    assert exact_chunk(page(blob, 0, 4), stream_complete=True) == LogChunk("ab", 0, 2, 5, False)


@pytest.mark.parametrize("kept", [1, 2, 3])
def test_every_cut_of_a_four_byte_character_is_undone(kept):
    blob = b"xy" + "😀".encode() + b"z"  # 7 bytes; the page holds ``kept`` of the emoji's 4
    assert exact_chunk(page(blob, 0, 2 + kept), stream_complete=True) == LogChunk("xy", 0, 2, 7, False)


def test_the_next_page_starts_on_the_character_and_the_pieces_glue():
    blob = b"ab" + EURO + b"cd"
    first = exact_chunk(page(blob, 0, 4), stream_complete=True)
    second = exact_chunk(page(blob, first.next_offset, 5), stream_complete=True)
    assert (first.text, second.text) == ("ab", "€cd")
    assert (second.offset, second.next_offset) == (2, 7)
    assert (first.text + second.text).encode() == blob


def test_the_end_of_a_finished_stream_is_kept_as_the_server_has_it():
    # A stream that ends inside a character (the server truncated it, or the script was killed):
    # there is no next page to complete it, so its U+FFFD is the truth.
    blob = b"ab" + EURO[:2]
    assert exact_chunk(page(blob, 0, 4), stream_complete=True) == LogChunk("ab\ufffd", 0, 4, 4, False)


def test_the_end_of_a_running_stream_holds_back_a_cut_character():
    # The script has written two of the euro sign's bytes so far; the third may come.
    blob = b"ab" + EURO[:2]
    assert exact_chunk(page(blob, 0, 4), stream_complete=False) == LogChunk("ab", 0, 2, 4, False)


def test_a_page_without_a_cut_is_returned_whole():
    blob = b"ab" + EURO + b"c"
    assert exact_chunk(page(blob, 0, 5), stream_complete=False) == LogChunk("ab€", 0, 5, 6, False)
    assert exact_chunk(page(b"", 0, 4), stream_complete=True) == LogChunk("", 0, 0, 0, False)


def test_invalid_bytes_that_are_not_a_cut_stay_as_the_server_decodes_them():
    # Two invalid bytes make two U+FFFD: more than the one a cut character leaves, so nothing moves.
    blob = b"ok\xff\xfe" + b"tail"
    assert exact_chunk(page(blob, 0, 4), stream_complete=True) == LogChunk("ok\ufffd\ufffd", 0, 4, 8, False)


def test_truncation_is_carried_over():
    chunk = exact_chunk(page(b"abc", 0, 4, truncated=True), stream_complete=True)
    assert chunk.truncated is True and chunk.text == "abc"


# -- LogCursor ------------------------------------------------------------------------------------


def walk(blob: bytes, cursor: LogCursor) -> tuple[list[LogChunk], list[tuple[int, int]]]:
    """Drive ``cursor`` over ``blob`` as a hook does; returns the chunks and each request's (offset, limit)."""
    chunks, requests = [], []
    while not cursor.done:
        requests.append((cursor.offset, cursor.next_limit()))
        chunk = cursor.accept(page(blob, cursor.offset, cursor.next_limit()))
        if chunk is not None:
            chunks.append(chunk)
    return chunks, requests


def test_the_cursor_walks_a_stream_page_by_page_on_character_boundaries():
    blob = b"ab" + EURO + b"cd" + EURO  # 10 bytes
    chunks, requests = walk(blob, LogCursor(0, 4, None, stream_complete=True))
    assert [c.text for c in chunks] == ["ab", "€c", "d€"]
    assert [(c.offset, c.next_offset) for c in chunks] == [(0, 2), (2, 6), (6, 10)]
    assert requests == [(0, 4), (2, 4), (6, 4)]  # no request after the page that reached the end


def test_the_cursor_starts_at_an_offset_and_stops_after_max_bytes():
    blob = b"0123456789"
    chunks, requests = walk(blob, LogCursor(3, 4, 5, stream_complete=True))
    assert [c.text for c in chunks] == ["3456", "7"]
    assert requests == [(3, 4), (7, 1)]  # the last request asks only for what is left of max_bytes


def test_max_bytes_zero_reads_nothing():
    cursor = LogCursor(0, 4, 0, stream_complete=True)
    assert cursor.done


def test_a_page_with_nothing_new_ends_the_walk():
    # A running job whose stream ends with a cut character: the cursor stops before it, to resume there.
    blob = b"ab" + EURO[:2]
    cursor = LogCursor(2, 4, None, stream_complete=False)
    assert cursor.accept(page(blob, 2, 4)) is None
    assert cursor.done and cursor.offset == 2


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ((-1, 4, None), "offset must be a byte offset >= 0, got -1"),
        ((0, 3, None), "page_size must be a number of bytes between 4 and 1048576, got 3"),
        ((0, 2_000_000, None), "page_size must be a number of bytes between 4 and 1048576, got 2000000"),
        ((0, 4, -1), "max_bytes must be a number of bytes >= 0, got -1"),
    ],
)
def test_the_cursor_checks_its_arguments(arguments, match):
    with pytest.raises(ValueError, match=match):
        LogCursor(*arguments, stream_complete=True)
