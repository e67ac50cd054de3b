"""Typed views of what script-runner returns: job status, job (and a view of one of its streams), log page.

These models are the only place that knows the server's JSON field names. They convert to
plain JSON-safe dicts (``to_dict``) for XCom and trigger events, and back (``from_dict``).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: The two log streams of a job.
LOG_STREAMS = ("stdout", "stderr")


class JobStatus(str, enum.Enum):
    """Status of a script-runner job."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"
    #: A status this provider does not know; treated as still in progress.
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: Any) -> JobStatus:
        """Map the server's status string to a member; unknown values warn and become UNKNOWN."""
        text = str(value or "").strip().lower()
        member = _STATUS_ALIASES.get(text)
        if member is None:
            try:
                member = cls(text)
            except ValueError:
                member = cls.UNKNOWN
        if member is cls.UNKNOWN:
            log.warning("script-runner reported an unknown job status %r; treating it as not finished", value)
        return member

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_success(self) -> bool:
        return self is JobStatus.SUCCEEDED


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELED}
)
# Spellings used by other descriptions of the API; the real server says succeeded/canceled.
_STATUS_ALIASES = {
    "completed": JobStatus.SUCCEEDED,
    "cancelled": JobStatus.CANCELED,
    "timedout": JobStatus.TIMED_OUT,
}


def _opt_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class StreamView:
    """
    One log stream of a job: its size in bytes, whether the server stopped storing it
    (``truncated``), and ``preview``, the end of the output as the job object carries it.
    """

    name: str
    size: int
    truncated: bool
    preview: str


@dataclass(frozen=True)
class ScriptRunnerJob:
    """
    One run of a script, as the server reports it.

    ``status`` is the parsed :class:`JobStatus`; ``raw_status`` keeps the server's own word.
    ``exit_code`` is None until the job ends and -1 when the script was killed by a signal,
    timed out, canceled, or lost in a server restart.
    """

    job_id: str
    script_id: str | None = None
    mode: str | None = None
    status: JobStatus = JobStatus.UNKNOWN
    raw_status: str | None = None
    exit_code: int | None = None
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_ms: int | None = None
    stdout_size: int = 0
    stderr_size: int = 0
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_preview: str = ""
    stderr_preview: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def is_success(self) -> bool:
        return self.status.is_success

    @property
    def was_killed_or_lost(self) -> bool:
        """True for ``failed`` with code -1: killed by a signal, or lost when the server restarted."""
        return self.status is JobStatus.FAILED and self.exit_code == -1

    def stream(self, name: str) -> StreamView:
        """What the job says about one of its log streams (``stdout`` or ``stderr``)."""
        if name == "stdout":
            return StreamView(name, self.stdout_size, self.stdout_truncated, self.stdout_preview)
        if name == "stderr":
            return StreamView(name, self.stderr_size, self.stderr_truncated, self.stderr_preview)
        raise ValueError(f"stream must be 'stdout' or 'stderr', got {name!r}")

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> ScriptRunnerJob:
        """Build from the server's job object (camelCase JSON)."""
        if not isinstance(body, dict) or not isinstance(body.get("jobId"), str) or not body.get("jobId"):
            raise ValueError("job object has no jobId")
        known = {
            "ok", "jobId", "scriptId", "mode", "status", "code", "createdAt", "startedAt", "endedAt",
            "durationMs", "stdoutSize", "stderrSize", "stdoutTruncated", "stderrTruncated",
            "stdoutPreview", "stderrPreview",
        }  # fmt: skip
        return cls(
            job_id=body["jobId"],
            script_id=body.get("scriptId"),
            mode=body.get("mode"),
            status=JobStatus.parse(body.get("status")),
            raw_status=body.get("status"),
            exit_code=_opt_int(body.get("code")),
            created_at=body.get("createdAt"),
            started_at=body.get("startedAt"),
            ended_at=body.get("endedAt"),
            duration_ms=_opt_int(body.get("durationMs")),
            stdout_size=_opt_int(body.get("stdoutSize")) or 0,
            stderr_size=_opt_int(body.get("stderrSize")) or 0,
            stdout_truncated=bool(body.get("stdoutTruncated")),
            stderr_truncated=bool(body.get("stderrTruncated")),
            stdout_preview=body.get("stdoutPreview") or "",
            stderr_preview=body.get("stderrPreview") or "",
            extra={k: v for k, v in body.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (status as its string value); inverse of :meth:`from_dict`."""
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScriptRunnerJob:
        values = dict(data)
        values["status"] = JobStatus.parse(values.get("raw_status") or values.get("status"))
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class LogPage:
    """One page of a job's log stream, exactly as the server returned it (``data`` may hold U+FFFD at cut points)."""

    job_id: str
    stream: str
    offset: int
    next_offset: int
    total_size: int
    truncated: bool
    data: str

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> LogPage:
        try:
            return cls(
                job_id=str(body["jobId"]),
                stream=str(body["stream"]),
                offset=int(body["offset"]),
                next_offset=int(body["nextOffset"]),
                total_size=int(body["totalSize"]),
                truncated=bool(body.get("truncated")),
                data=body["data"] if isinstance(body["data"], str) else str(body["data"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"log page is missing or has a bad field: {err}") from err


@dataclass(frozen=True)
class LogChunk:
    """
    Exact text of the byte range ``[offset, next_offset)`` of a log stream.

    Produced by the hook's whole-stream iteration, which cuts on character boundaries so that
    chunks glue together into the script's exact output.
    """

    text: str
    offset: int
    next_offset: int
    total_size: int
    truncated: bool
