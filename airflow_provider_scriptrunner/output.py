"""
A job's output in the task log and in the return value, the same way in the worker and the triggerer.

- :class:`LineWriter` writes text as ``[stdout] line`` / ``[stderr] line``, holding at most one
  partial line; it knows how many bytes it has not written yet, so a follower can say exactly up
  to which byte offset the log is complete.
- :class:`OutputCapture` follows one stream with the sync hook (the worker, and ``execute_complete``
  after a deferral), keeps the end of the output for the return value and, when the server
  truncated the stream, logs and keeps the true end of the output from the job's preview.
- :class:`AsyncStreamFollower` follows one stream with the async hook in a trigger.

Memory stays bounded whatever the output size: a page at a time, one partial line (written as it
is once it outgrows :data:`MAX_HELD_LINE` characters, or a page when pages are larger), and the
kept end of the output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_scriptrunner.hooks.scriptrunner import MAX_LOG_PAGE_BYTES
from airflow_provider_scriptrunner.log_paging import utf8_size

if TYPE_CHECKING:
    from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerAsyncHook, ScriptRunnerHook
    from airflow_provider_scriptrunner.models import ScriptRunnerJob

#: Put between the stored output and the preview in the return value of a truncated stream.
TRUNCATION_MARKER = (
    "\n[... the server did not keep the output past this point; the end of the output follows ...]\n"
)
_REPLACEMENT = "\ufffd"
#: Characters of a line without its newline yet that are held back before it is written as it is.
#: Not the page size: small log pages (``log_page_bytes``) must not split ordinary lines in the log.
MAX_HELD_LINE = 65536


def true_end(job: ScriptRunnerJob, stream: str) -> str:
    """The real end of a stream from the job's preview (a character cut at its start is dropped)."""
    return getattr(job, f"{stream}_preview").lstrip(_REPLACEMENT)


def truncation_warning(log: Any, job_id: str, stream: str, size: int) -> None:
    log.warning(
        "The server truncated %s of job %s at %d bytes (runner.maxLogBytesPerStream): the output past "
        "that point was not stored; its end is shown from the job's preview when the job ends",
        stream,
        job_id,
        size,
    )


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


class OutputCapture:
    """
    Follows one log stream (sync hook) into the task log, keeping only the last ``cap`` bytes.

    :param stream: ``stdout`` or ``stderr``.
    :param cap: bytes of the end of the output kept for the return value.
    :param page_size: bytes per log request.
    :param log: the logger lines go to.
    :param offset: byte offset to start at: what is before it was logged already (by a trigger).
    :param emit: write the output to the log (False: only keep it).
    :param truncation_warned: the truncation was already reported (by a trigger).
    """

    def __init__(
        self,
        stream: str,
        cap: int,
        page_size: int,
        log: Any,
        offset: int = 0,
        *,
        emit: bool = True,
        truncation_warned: bool = False,
    ) -> None:
        self.stream = stream
        self.cap = cap
        self.page_size = page_size
        self.log = log
        self.offset = offset
        self.start_offset = offset
        self.total_size = 0
        self.emit = emit
        self.writer = LineWriter(stream, log, max(page_size, MAX_HELD_LINE))
        # The last ``cap`` bytes of the output (UTF-8): filled up to ``cap``, then a ring over the
        # same buffer, oldest byte at ``_start`` (a buffer that is never reallocated once full).
        self.kept = bytearray()
        self._start = 0
        self.capped = False
        self.server_truncated = False
        self.truncation_warned = truncation_warned

    def prime(self, hook: ScriptRunnerHook, job_id: str) -> None:
        """
        Keep the last ``cap`` bytes before ``offset`` without logging them (a trigger logged them).

        One page that ENDS at ``offset`` (a character boundary) is read, three bytes longer than
        ``cap``: where it starts inside a character the server shows U+FFFD for the cut bytes, and
        ``result`` drops everything before the last ``cap`` bytes anyway. (A cap too large for one
        page reads the stream from its start, keeping only the end.)
        """
        if self.offset == 0:
            return
        if self.cap == 0:
            self.capped = True  # there was output, and none of it is kept
            return
        span = min(self.offset, self.cap + 3)
        if span <= MAX_LOG_PAGE_BYTES:
            self._keep(hook.get_log_page(job_id, self.stream, self.offset - span, span).data)
        else:
            for chunk in hook.iter_log(
                job_id, self.stream, 0, page_size=self.page_size, max_bytes=self.offset
            ):
                self._keep(chunk.text)
                del chunk
        self.capped = self.capped or span < self.offset

    def pump(
        self, hook: ScriptRunnerHook, job_id: str, *, complete: bool, max_bytes: int | None = None
    ) -> None:
        """
        Read what is new since the last call (at most ``max_bytes``) into the task log.

        Pages are decoded as they arrive (:meth:`ScriptRunnerHook.copy_log`): the text goes to the
        log and the kept end in pieces of a few KiB, so a page is never in memory whole.
        """
        for end in hook.copy_log(
            job_id,
            self._take,
            self.stream,
            self.offset,
            page_size=self.page_size,
            max_bytes=max_bytes,
            stream_complete=complete,
        ):
            self.offset = end.next_offset
            self.total_size = end.total_size
            self.server_truncated = self.server_truncated or end.truncated

    def _take(self, text: str) -> None:
        self._keep(text)
        if self.emit:
            self.writer.write(text)

    def take_preview(self, job: ScriptRunnerJob) -> bool:
        """
        Take the rest of a finished job's stream from its preview when the preview is all of it
        (the usual case for a quick script): one request fewer per stream. False: read the logs.

        The preview is the end of the output decoded as UTF-8; it is the whole output, byte for
        byte, only when the stream was not truncated, the preview holds no U+FFFD (a decoding
        that lost no bytes: no character cut at its start, no invalid bytes) and its UTF-8 length
        is the stream's size. Anything else goes to the logs endpoint, as before.
        """
        size = getattr(job, f"{self.stream}_size")
        preview = getattr(job, f"{self.stream}_preview")
        if (
            not job.is_terminal
            or getattr(job, f"{self.stream}_truncated")
            or not preview
            or _REPLACEMENT in preview
            or utf8_size(preview) != size
        ):
            return False
        if self.offset:
            try:  # ``offset`` is a character boundary: what the log has already
                preview = preview.encode()[self.offset :].decode()
            except UnicodeDecodeError:
                return False
        self.offset = self.total_size = size
        self._keep(preview)
        if self.emit:
            self.writer.write(preview)
        return True

    def finish(self, job: ScriptRunnerJob | None = None) -> None:
        """
        Write out a last line without a newline. For a finished ``job`` whose stream the server
        truncated: say so (once), then log and keep the true end of the output (its preview).
        """
        self.writer.flush()
        if job is None:
            return
        self.server_truncated = self.server_truncated or getattr(job, f"{self.stream}_truncated")
        if not self.server_truncated:
            return
        tail = true_end(job, self.stream)
        if not self.truncation_warned:
            size = max(self.total_size, getattr(job, f"{self.stream}_size"))
            truncation_warning(self.log, job.job_id, self.stream, size)
            self.truncation_warned = True
        if tail:
            if self.emit:
                self.log.info(
                    "End of %s past the truncation (the job's preview of its last bytes):", self.stream
                )
                self.writer.write(tail)
                self.writer.flush()
            self._keep(TRUNCATION_MARKER + tail)

    def _keep(self, text: str) -> None:
        # At most ``cap`` bytes in one buffer: what falls off the front is gone (the log has it).
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

    def result(self) -> tuple[str, bool]:
        """The end of the output (at most ``cap`` bytes) and whether it is not all of it."""
        kept = self.kept[self._start :] + self.kept[: self._start] if self._start else self.kept
        start = 0
        if self.capped:  # the front may be the end of a character cut by the cap: drop it
            while start < min(3, len(kept)) and 0x80 <= kept[start] < 0xC0:
                start += 1
        return kept[start:].decode("utf-8", "surrogatepass"), self.capped or self.server_truncated


class AsyncStreamFollower:
    """
    Follows one log stream with the async hook (in a trigger): logs new lines, remembers where it is.

    ``logged_offset`` is the byte offset up to which every line is in the log: the held partial
    line is not counted, so whoever continues from there logs it whole.
    """

    def __init__(self, stream: str, log: Any, page_size: int, offset: int = 0) -> None:
        self.stream = stream
        self.log = log
        self.page_size = page_size
        self.offset = offset
        self.writer = LineWriter(stream, log, max(page_size, MAX_HELD_LINE))
        self.truncation_warned = False

    @property
    def logged_offset(self) -> int:
        return self.offset - self.writer.pending_bytes

    async def pump(self, hook: ScriptRunnerAsyncHook, job_id: str, *, complete: bool) -> None:
        async for chunk in hook.iter_log(
            job_id, self.stream, self.offset, page_size=self.page_size, stream_complete=complete
        ):
            self.offset = chunk.next_offset
            self.writer.write(chunk.text)
            if chunk.truncated:
                self.warn_truncated(job_id, chunk.total_size)
            del chunk

    def warn_truncated(self, job_id: str, size: int) -> None:
        if not self.truncation_warned:
            self.truncation_warned = True
            truncation_warning(self.log, job_id, self.stream, size)
