"""
Log paging: the server cuts pages on byte boundaries; these turn its pages into exact text.

:func:`exact_chunk` cuts a page back to its last whole character; :class:`LogCursor` walks a stream
page by page. The sync and the async hook share both. :class:`PageTextReader` reads a page's JSON
body as it arrives and hands out the text of its ``data`` in small pieces, so that a page is never
in memory whole (the sync hook's :meth:`~ScriptRunnerHook.copy_log`, which the run operator's log
streaming uses).
"""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_scriptrunner import validation
from airflow_provider_scriptrunner.models import LogChunk, LogPage
from airflow_provider_scriptrunner.transport import malformed

_REPLACEMENT = "\ufffd"
_QUOTE, _BACKSLASH = 0x22, 0x5C


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
    if text.endswith(_REPLACEMENT):
        cut = end_cut(page, len(text[:-1].encode("utf-8")), stream_complete=stream_complete)
        if cut:
            return LogChunk(text[:-1], page.offset, page.next_offset - cut, page.total_size, page.truncated)
    return LogChunk(text, page.offset, page.next_offset, page.total_size, page.truncated)


def end_cut(page: LogPage, bytes_before_last: int, *, stream_complete: bool) -> int:
    """
    For a page whose text ends in U+FFFD: how many bytes that U+FFFD stands for when it is a
    character the page cut (1 to 3: the page is then read up to where that character starts), else 0.

    :param bytes_before_last: UTF-8 length of the page's text without its last character.
    """
    span = page.next_offset - page.offset
    if span <= 0 or (page.next_offset >= page.total_size and stream_complete):
        return 0
    cut = span - bytes_before_last
    return cut if 1 <= cut <= 3 else 0


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
        return chunk if self.advance(page, chunk.next_offset) else None

    def advance(self, page: LogPage, next_offset: int) -> bool:
        """Move past ``page``, read exactly up to ``next_offset``; False when it held nothing new."""
        if next_offset <= self.offset:
            self.done = True
            return False
        consumed = next_offset - self.offset
        self.offset = next_offset
        if self.remaining is not None:
            self.remaining -= consumed
        self.done = page.next_offset >= page.total_size or self.remaining == 0
        return True


class PageTextReader:
    """
    Reads the JSON body of a log page as it arrives; hands out the text of its ``data`` in pieces.

    :meth:`feed` takes the body's bytes in any slices and returns the text decoded so far, less its
    last character, which is held back until the page is complete (it may be the U+FFFD of a
    character the page cut: :meth:`last` says, with the page's other fields, which :meth:`fields`
    parses from the rest of the body). Only ``data`` at the top level of the object is read piece by
    piece; a body of another shape is kept whole and its ``data`` handed out at the end.

    Memory is one slice of the body: the escapes of a JSON string, a UTF-8 character and a surrogate
    pair cut by a slice are completed from the next slice before being decoded.

    :param skip: characters of ``data`` not to hand out again (a retry re-reading the page).
    """

    def __init__(self, skip: int = 0) -> None:
        self.skip = skip
        self._rest = bytearray()  # the body without the content of ``data``
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._token = bytearray()  # the start of the current string at the top level
        self._last_string: bytes | None = None
        self._key: bytes | None = None  # the key whose value comes next
        self._in_data = False
        self._streamed = False
        self._pending = b""  # the end of a slice of ``data`` that cannot be decoded alone
        self._held = ""  # the last character decoded

    def feed(self, raw: bytes) -> list[str]:
        """The text of ``data`` that ``raw`` completes (without the held-back last character)."""
        pieces: list[str] = []
        position = 0
        while position < len(raw):
            read = self._data if self._in_data else self._structure
            position = read(raw, position, pieces)
        return pieces

    def fields(self) -> str:
        """The body without the content of ``data`` (``"data":""``), to be parsed as JSON."""
        if self._in_data:
            raise ValueError("the log page ends inside its data")
        return self._rest.decode("utf-8", "surrogatepass")

    def finish(self, data: str) -> tuple[list[str], str]:
        """
        After :meth:`fields` was parsed: the text still to hand out and the held-back last character.

        :param data: the parsed ``data`` field: ``""`` when it was read piece by piece, else its text.
        """
        pieces: list[str] = []
        if not self._streamed and data:
            self._hand_out(data, pieces)
        return pieces, self._held

    # -- outside the data string: the few bytes of the other fields, one at a time ------------------

    def _structure(self, raw: bytes, position: int, pieces: list[str]) -> int:
        end = len(raw)
        while position < end:
            byte = raw[position]
            position += 1
            self._rest.append(byte)
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif byte == _BACKSLASH:
                    self._escaped = True
                elif byte == _QUOTE:
                    self._in_string = False
                    if self._depth == 1:
                        self._last_string = bytes(self._token)
                elif self._depth == 1 and len(self._token) < 8:
                    self._token.append(byte)
            elif byte == _QUOTE:
                if self._depth == 1 and self._key == b"data" and not self._streamed:
                    self._in_data = self._streamed = True
                    self._key = None
                    return position
                self._in_string = True
                self._token.clear()
                self._key = None
            elif byte in b"{[":
                self._depth += 1
                self._key = None
            elif byte in b"}]":
                self._depth -= 1
            elif byte == 0x3A and self._depth == 1:  # ':'
                self._key = self._last_string
            elif byte == 0x2C and self._depth == 1:  # ','
                self._key = self._last_string = None
            elif byte not in b" \t\r\n":
                self._key = None  # a value that is not a string
        return position

    # -- inside the data string ------------------------------------------------------------------

    def _data(self, raw: bytes, position: int, pieces: list[str]) -> int:
        buffer = raw[position:] if position else raw
        if self._pending:
            buffer = self._pending + buffer
            self._pending = b""
        closing = _closing_quote(buffer)
        if closing >= 0:
            self._decode(buffer, closing, pieces)
            self._in_data = False
            self._rest.append(_QUOTE)
            return len(raw) - (len(buffer) - closing - 1)
        cut = _safe_cut(buffer)
        self._pending = buffer[cut:]
        self._decode(buffer, cut, pieces)
        return len(raw)

    def _decode(self, buffer: bytes, end: int, pieces: list[str]) -> None:
        if end:
            # One copy of the slice (quoted), decoded by the json module's own string scanner.
            self._hand_out(json.loads(b"".join((b'"', memoryview(buffer)[:end], b'"'))), pieces)

    def _hand_out(self, text: str, pieces: list[str]) -> None:
        if self.skip:
            skipped = min(self.skip, len(text))
            text, self.skip = text[skipped:], self.skip - skipped
            if not text:
                return
        if self._held:
            pieces.append(self._held)
        if len(text) > 1:
            pieces.append(text[:-1])
        self._held = text[-1]


def _backslashes_before(buffer: bytes, index: int) -> int:
    count = 0
    while index - count > 0 and buffer[index - count - 1] == _BACKSLASH:
        count += 1
    return count


def _closing_quote(buffer: bytes) -> int:
    """Index of the quote that ends the string ``buffer`` is inside (its start is not in an escape), or -1."""
    index = buffer.find(b'"')
    while index >= 0 and _backslashes_before(buffer, index) % 2:
        index = buffer.find(b'"', index + 1)
    return index


def _safe_cut(buffer: bytes) -> int:
    """
    Where a slice of a JSON string's content can be decoded on its own: not inside an escape,
    between the two halves of a surrogate pair, or inside a UTF-8 character.
    """
    cut = len(buffer)
    if _backslashes_before(buffer, cut) % 2:
        cut -= 1  # an escape whose letter has not arrived
    else:
        start = buffer.rfind(b"\\u", max(0, cut - 5), cut)
        if start >= 0 and not _backslashes_before(buffer, start) % 2:
            cut = start  # \uXXXX not complete yet
    if (
        cut >= 6
        and buffer[cut - 6 : cut - 4] == b"\\u"
        and not _backslashes_before(buffer, cut - 6) % 2
        and 0xD800 <= int(buffer[cut - 4 : cut], 16) <= 0xDBFF
    ):
        return cut - 6  # the first half of a surrogate pair: wait for the second
    lead = cut - 1
    while lead > max(0, cut - 4) and 0x80 <= buffer[lead] < 0xC0:
        lead -= 1
    if lead >= 0 and buffer[lead] >= 0xC0:
        size = 2 if buffer[lead] < 0xE0 else 3 if buffer[lead] < 0xF0 else 4
        if lead + size > cut:
            return lead
    return cut


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
