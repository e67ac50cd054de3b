"""
Log paging: the server cuts pages on byte boundaries; these turn its pages into exact text.

:func:`exact_chunk` cuts a page back to its last whole character; :class:`LogCursor` walks a stream
page by page. The sync and the async hook share both.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_scriptrunner.client import validation
from airflow_provider_scriptrunner.client.models import LogChunk, LogPage

#: Bytes per log request; the server's default page size.
DEFAULT_LOG_PAGE_BYTES = 65536
#: The server caps a log page at this many bytes.
MAX_LOG_PAGE_BYTES = 1048576
#: A page must hold one whole UTF-8 character (up to 4 bytes).
MIN_LOG_PAGE_BYTES = 4

_REPLACEMENT = "\ufffd"


def utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (without encoding an ASCII text to count them)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def exact_chunk(page: LogPage, *, stream_complete: bool) -> LogChunk:
    """
    The exact text of a page, cut back to the last whole character.

    The server decodes each byte page on its own, so a page ending inside a multi-byte
    character ends in U+FFFD. Such a page is returned without that character and with
    ``next_offset`` moved back to where the character starts, so the next page begins on a
    character boundary. At the very end of a finished stream (or a truncated one) the text
    is returned as the server has it.
    """
    text = page.data
    span = page.next_offset - page.offset
    at_final_end = page.next_offset >= page.total_size and stream_complete
    if text.endswith(_REPLACEMENT) and span > 0 and not at_final_end:
        cut = span - len(text[:-1].encode("utf-8", "surrogatepass"))  # bytes the U+FFFD stands for
        if 1 <= cut <= 3:
            return LogChunk(text[:-1], page.offset, page.next_offset - cut, page.total_size, page.truncated)
    return LogChunk(text, page.offset, page.next_offset, page.total_size, page.truncated)


class LogCursor:
    """
    Walks a log stream page by page; shared by the sync and async whole-stream iterations.

    :param offset: byte offset to start at (a character boundary).
    :param page_size: bytes per request.
    :param max_bytes: stop after this many bytes (None: read to the current end).
    :param stream_complete: the job has ended, so a character cut at the end is final.
    """

    def __init__(self, offset: int, page_size: int, max_bytes: int | None, stream_complete: bool) -> None:
        self.offset = validation.offset("offset", offset)
        self.page_size = page_size_check("page_size", page_size)
        self.remaining = None if max_bytes is None else validation.byte_count("max_bytes", max_bytes)
        self.stream_complete = stream_complete
        self.done = self.remaining == 0

    def next_limit(self) -> int:
        return self.page_size if self.remaining is None else min(self.page_size, self.remaining)

    def accept(self, page: LogPage) -> LogChunk | None:
        """Take a page; return its exact chunk, or None when there is nothing more to read."""
        chunk = exact_chunk(page, stream_complete=self.stream_complete)
        if chunk.next_offset <= self.offset:
            self.done = True
            return None
        consumed = chunk.next_offset - self.offset
        self.offset = chunk.next_offset
        if self.remaining is not None:
            self.remaining -= consumed
        self.done = page.next_offset >= page.total_size or self.remaining == 0
        return chunk


def page_size_check(name: str, value: Any) -> int:
    """Bytes per log request: at least one whole UTF-8 character, at most the server's cap."""
    return validation.integer(
        name, value, minimum=MIN_LOG_PAGE_BYTES, maximum=MAX_LOG_PAGE_BYTES, what="a number of bytes"
    )


def log_params(stream: str, offset: int, limit: int | None) -> dict[str, Any]:
    """The query of GET /jobs/{id}/logs."""
    params: dict[str, Any] = {
        "stream": validation.validate_stream(stream),
        "offset": validation.offset("offset", offset),
    }
    if limit is not None:
        params["limit"] = validation.integer(
            "limit", limit, minimum=1, maximum=MAX_LOG_PAGE_BYTES, what="a number of bytes"
        )
    return params
