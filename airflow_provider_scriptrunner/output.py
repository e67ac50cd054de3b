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

from collections import deque
from typing import TYPE_CHECKING, Any

from airflow_provider_scriptrunner.hooks.scriptrunner import MAX_LOG_PAGE_BYTES

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


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


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
        return _size(self._partial) if self._partial else 0

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
        self.kept: deque[tuple[str, int]] = deque()  # (text, bytes) chunks of the end of the output
        self.kept_bytes = 0
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
        """Read what is new since the last call (at most ``max_bytes``) into the task log."""
        for chunk in hook.iter_log(
            job_id,
            self.stream,
            self.offset,
            page_size=self.page_size,
            max_bytes=max_bytes,
            stream_complete=complete,
        ):
            self.offset = chunk.next_offset
            self.total_size = chunk.total_size
            self.server_truncated = self.server_truncated or chunk.truncated
            self._keep(chunk.text)
            if self.emit:
                self.writer.write(chunk.text)
            del chunk  # not held while the next page is fetched

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
        # Whole chunks are kept (no re-concatenation per page); result() cuts to ``cap`` bytes.
        if not text:
            return
        size = _size(text)
        self.kept.append((text, size))
        self.kept_bytes += size
        while self.kept and self.kept_bytes - self.kept[0][1] >= self.cap:
            self.kept_bytes -= self.kept.popleft()[1]
            self.capped = True

    def result(self) -> tuple[str, bool]:
        """The end of the output (at most ``cap`` bytes) and whether it is not all of it."""
        kept = "".join(text for text, _ in self.kept)
        if self.kept_bytes > self.cap:
            data = kept.encode()[-self.cap :] if self.cap else b""
            kept = data.decode("utf-8", errors="ignore")  # drops a character cut at the front
            self.capped = True
        return kept, self.capped or self.server_truncated


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
