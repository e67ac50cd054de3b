"""
A job's output in the task log and in the return value, the same way in the worker and the triggerer.

- :class:`TailBuffer` keeps the last ``cap`` bytes of a stream for the return value.
- :class:`LineWriter` writes text as ``[stdout] line`` / ``[stderr] line``, holding at most one
  partial line.
- :class:`StreamFollower` follows one stream of a job into the task log, page by page through the
  hook's ``iter_log``, with a sync face (the worker, ``execute_complete``, the sensor) and an async
  one (the trigger); it remembers where it is, so that whoever continues logs nothing twice.

Memory stays bounded whatever the output size: a page at a time (the hook holds a page's body,
its text and its parsed JSON, at most a few pages), one partial line, and the tail buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_scriptrunner.client.paging import MAX_LOG_PAGE_BYTES, utf8_size

if TYPE_CHECKING:
    from airflow_provider_scriptrunner.client.models import LogChunk, ScriptRunnerJob
    from airflow_provider_scriptrunner.hooks._async import ScriptRunnerAsyncHook
    from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook

#: Put between the stored output and the preview in the return value of a truncated stream.
TRUNCATION_MARKER = (
    "\n[... the server did not keep the output past this point; the end of the output follows ...]\n"
)
_REPLACEMENT = "\ufffd"
#: Characters of a line without its newline yet that are held back before it is written as it is.
#: Not the page size: small log pages (``log_page_bytes``) must not split ordinary lines in the log.
MAX_HELD_LINE = 65536


class TailBuffer:
    """
    The last ``cap`` bytes of a stream (UTF-8): filled up to ``cap``, then a ring over the same
    buffer, oldest byte at ``_start``, never reallocated once full.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = bytearray()
        self._start = 0
        #: Some output did not fit and is not kept.
        self.capped = False

    def keep(self, text: str) -> None:
        if not text:
            return
        if self.cap == 0:
            self.capped = True
            return
        data = text.encode("utf-8", "surrogatepass")
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept += data[:room]
            data = data[room:]
        if not data:
            return
        self.capped = True
        if len(data) >= self.cap:
            self.kept[:], self._start = data[-self.cap :], 0
            return
        end = self._start + len(data)
        if end <= self.cap:
            self.kept[self._start : end] = data
        else:
            split = self.cap - self._start
            self.kept[self._start :] = data[:split]
            self.kept[: end - self.cap] = data[split:]
        self._start = end % self.cap

    def text(self) -> str:
        """What is kept, as text (a character the cap cut at the front is dropped)."""
        kept = self.kept[self._start :] + self.kept[: self._start] if self._start else self.kept
        start = 0
        if self.capped:
            while start < min(3, len(kept)) and 0x80 <= kept[start] < 0xC0:
                start += 1
        return kept[start:].decode("utf-8", "surrogatepass")


class LineWriter:
    """
    Writes text to ``log`` line by line as ``[stream] line``, without copying whole pages.

    A line without its newline yet is held back until the rest arrives, or written as it is
    once it grows past ``max_partial`` characters (so memory stays bounded) or on :meth:`flush`.
    """

    def __init__(self, stream: str, log: Any, max_partial: int) -> None:
        self.stream = stream
        self.log = log
        self.max_partial = max_partial
        self._partial = ""

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not written yet (the held partial line)."""
        return utf8_size(self._partial) if self._partial else 0

    def write(self, text: str) -> None:
        start = 0
        while (end := text.find("\n", start)) >= 0:
            line = text[start:end]
            if self._partial:
                line, self._partial = self._partial + line, ""
            self.log.info("[%s] %s", self.stream, line)
            start = end + 1
        self._partial += text[start:]
        if len(self._partial) > self.max_partial:
            self.flush()

    def flush(self) -> None:
        if self._partial:
            self.log.info("[%s] %s", self.stream, self._partial)
            self._partial = ""


class StreamFollower:
    """
    Follows one log stream of a job into the task log, keeping its end in ``tail`` if given.

    :param stream: ``stdout`` or ``stderr``.
    :param log: the logger lines go to.
    :param page_size: bytes per log request.
    :param offset: byte offset to start at: what is before it is in the log already.
    :param tail: where to keep the end of the output for the return value; None: log only.
    :param truncation_warned: the server's truncation of this stream was already reported.
    """

    def __init__(
        self,
        stream: str,
        log: Any,
        page_size: int,
        offset: int = 0,
        *,
        tail: TailBuffer | None = None,
        truncation_warned: bool = False,
    ) -> None:
        self.stream = stream
        self.log = log
        self.page_size = page_size
        self.offset = offset
        self.tail = tail
        self.total_size = 0
        self.server_truncated = False
        self.truncation_warned = truncation_warned
        self.writer = LineWriter(stream, log, max(page_size, MAX_HELD_LINE))

    @property
    def logged_offset(self) -> int:
        """The byte offset up to which every line is in the log (a held partial line is not)."""
        return self.offset - self.writer.pending_bytes

    def result(self) -> tuple[str, bool]:
        """The kept end of the output and whether it is not all of it."""
        assert self.tail is not None, "a follower without a tail only logs"
        return self.tail.text(), self.tail.capped or self.server_truncated

    # -- reading -----------------------------------------------------------------------------------

    def pump(
        self, hook: ScriptRunnerHook, job_id: str, *, complete: bool, max_bytes: int | None = None
    ) -> None:
        """Read what is new since the last call (at most ``max_bytes``) into the log and the tail."""
        for chunk in hook.iter_log(
            job_id,
            self.stream,
            self.offset,
            page_size=self.page_size,
            max_bytes=max_bytes,
            stream_complete=complete,
        ):
            self._take(chunk)
            del chunk

    async def apump(self, hook: ScriptRunnerAsyncHook, job_id: str, *, complete: bool) -> None:
        """Async twin of :meth:`pump`, for the trigger."""
        async for chunk in hook.iter_log(
            job_id, self.stream, self.offset, page_size=self.page_size, stream_complete=complete
        ):
            self._take(chunk)
            del chunk

    def has_news(self, job: ScriptRunnerJob) -> bool:
        """Whether the job says its stream holds more than was read (the one reason to fetch)."""
        return job.stream(self.stream).size > self.offset

    def catch_up(self, hook: ScriptRunnerHook, job: ScriptRunnerJob) -> None:
        """Read what this poll of ``job`` says is new; a finished job's rest from its preview when that is all of it."""
        if self.has_news(job) and not self.take_preview(job):
            self.pump(hook, job.job_id, complete=job.is_terminal)

    async def acatch_up(self, hook: ScriptRunnerAsyncHook, job: ScriptRunnerJob) -> None:
        """Async twin of :meth:`catch_up`; a finished job's last line is written out."""
        if self.has_news(job) and not self.take_preview(job):
            await self.apump(hook, job.job_id, complete=job.is_terminal)
        if job.is_terminal:
            self.writer.flush()
        if self.server_truncated or job.stream(self.stream).truncated:
            self.warn_truncated(job)

    def prime(self, hook: ScriptRunnerHook, job_id: str) -> None:
        """
        Fill the tail with the last ``cap`` bytes before ``offset`` without logging them (a
        trigger logged them).

        One page that ENDS at ``offset`` (a character boundary) is read, three bytes longer than
        ``cap``: where it starts inside a character the server shows U+FFFD for the cut bytes, and
        the tail drops everything before its last ``cap`` bytes anyway. A cap too large for one
        page reads the stream from its start, keeping only the end.
        """
        if self.offset == 0 or self.tail is None:
            return
        tail = self.tail
        if tail.cap == 0:
            tail.capped = True  # there was output, and none of it is kept
            return
        span = min(self.offset, tail.cap + 3)
        if span <= MAX_LOG_PAGE_BYTES:
            tail.keep(hook.get_log_page(job_id, self.stream, self.offset - span, span).data)
        else:
            for chunk in hook.iter_log(
                job_id, self.stream, 0, page_size=self.page_size, max_bytes=self.offset
            ):
                tail.keep(chunk.text)
                del chunk
        tail.capped = tail.capped or span < self.offset

    def take_preview(self, job: ScriptRunnerJob) -> bool:
        """
        Take the rest of a finished job's stream from its preview when the preview is all of it
        (the usual case for a quick script): one request fewer. False: read the logs.

        The preview is the end of the output decoded as UTF-8; it is the whole output, byte for
        byte, only when the stream was not truncated, the preview holds no U+FFFD (a decoding
        that lost no bytes: no character cut at its start, no invalid bytes) and its UTF-8 length
        is the stream's size.
        """
        view = job.stream(self.stream)
        preview = view.preview
        if (
            not job.is_terminal
            or view.truncated
            or not preview
            or _REPLACEMENT in preview
            or utf8_size(preview) != view.size
        ):
            return False
        if self.offset:
            try:  # ``offset`` is a character boundary: what the log has already
                preview = preview.encode()[self.offset :].decode()
            except UnicodeDecodeError:
                return False
        self.offset = self.total_size = view.size
        self._write(preview)
        return True

    # -- the end ---------------------------------------------------------------------------------

    def finish(self, job: ScriptRunnerJob | None = None) -> None:
        """
        Write out a last line without a newline. For a finished ``job`` whose stream the server
        truncated: say so (once), then log and keep the true end of the output (its preview).
        """
        self.writer.flush()
        if job is None:
            return
        view = job.stream(self.stream)
        self.server_truncated = self.server_truncated or view.truncated
        if not self.server_truncated:
            return
        self.warn_truncated(job)
        end = view.preview.lstrip(_REPLACEMENT)  # a character cut at its start is dropped
        if end:
            self.log.info("End of %s past the truncation (the job's preview of its last bytes):", self.stream)
            self.writer.write(end)
            self.writer.flush()
            if self.tail is not None:
                self.tail.keep(TRUNCATION_MARKER + end)

    def warn_truncated(self, job: ScriptRunnerJob) -> None:
        """Say once that the server stopped storing this stream."""
        if self.truncation_warned:
            return
        self.truncation_warned = True
        self.log.warning(
            "The server truncated %s of job %s at %d bytes (runner.maxLogBytesPerStream): the output past "
            "that point was not stored; its end is shown from the job's preview when the job ends",
            self.stream,
            job.job_id,
            max(self.total_size, job.stream(self.stream).size),
        )

    def _take(self, chunk: LogChunk) -> None:
        self.offset = chunk.next_offset
        self.total_size = chunk.total_size
        self.server_truncated = self.server_truncated or chunk.truncated
        self._write(chunk.text)

    def _write(self, text: str) -> None:
        if self.tail is not None:
            self.tail.keep(text)
        self.writer.write(text)
