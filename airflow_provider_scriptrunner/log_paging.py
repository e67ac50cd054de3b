"""
Log paging: the server cuts pages on byte boundaries; these turn its pages into exact text.

:func:`exact_chunk` cuts a page back to its last whole character; :class:`LogCursor` walks a stream
page by page. The sync and the async hook share both.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_scriptrunner import validation
from airflow_provider_scriptrunner.models import LogChunk, LogPage
from airflow_provider_scriptrunner.transport import malformed

_REPLACEMENT = "\ufffd"


def exact_chunk(page: LogPage, *, stream_complete: bool) -> LogChunk:
    """
    The exact text of a page, cut back to the last whole character.

    The server decodes each byte page on its own, so a page ending inside a multi-byte
    character ends in U+FFFD. Such a page is returned without that character and with
    ``next_offset`` moved back to where the character starts, so the next page begins on a
    character boundary. At the very end of a finished stream (or a truncated one) the text
    is returned as the server has it.
    """
    span = page.next_offset - page.offset
    text = page.data
    at_end = page.next_offset >= page.total_size
    if span > 0 and text.endswith(_REPLACEMENT) and not (at_end and stream_complete):
        cut = span - len(text[:-1].encode("utf-8"))
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
        self.page_size = validation.page_size("page_size", page_size)
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


def log_params(stream: str, offset: int, limit: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "stream": validation.validate_stream(stream),
        "offset": validation.offset("offset", offset),
    }
    if validation.log_limit(limit) is not None:
        params["limit"] = limit
    return params


def log_page(data: dict[str, Any], status: int, job_id: str) -> LogPage:
    try:
        return LogPage.from_api(data)
    except ValueError as err:
        raise malformed(err, status, method="GET", url=f"/jobs/{job_id}/logs", body=data) from None
