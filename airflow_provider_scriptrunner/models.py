"""Typed views of what script-runner returns: job status, job, log page.

These models are the only place that knows the server's JSON field names. They convert to
plain JSON-safe dicts (``to_dict``) for XCom and trigger events, and back (``from_dict``).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)


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


#: Kinds of trigger event.
EVENT_SUCCESS = "success"
EVENT_FAILURE = "failure"
EVENT_TIMEOUT = "timeout"
EVENT_ERROR = "error"


@dataclass(frozen=True)
class JobEvent:
    """
    What a trigger reports back to the task: plain JSON across the trigger boundary.

    ``status`` is ``success`` (the job ended succeeded), ``failure`` (it ended otherwise),
    ``timeout`` (a limit passed first: ``limit`` names it, ``timeout``, ``execution_timeout`` or
    ``idle_timeout``) or ``error`` (the job could not be followed). ``canceled`` says whether the
    trigger canceled the job itself. ``log_offsets`` are the byte offsets of stdout and stderr up
    to which the trigger wrote the output to the log; ``truncation_warned`` the streams whose
    truncation it already reported.
    """

    status: str
    message: str
    job_id: str
    job: ScriptRunnerJob | None = None
    #: For ``error`` events: the server's error code when it gave one (e.g. JOB_NOT_FOUND).
    error_code: str | None = None
    limit: str | None = None
    canceled: bool = False
    log_offsets: dict[str, int] = field(default_factory=dict)
    truncation_warned: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "message": self.message,
            "job_id": self.job_id,
            "job": self.job.to_dict() if self.job else None,
            "error_code": self.error_code,
            "limit": self.limit,
            "canceled": self.canceled,
            "log_offsets": dict(self.log_offsets),
            "truncation_warned": list(self.truncation_warned),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobEvent:
        if not isinstance(data, dict) or "status" not in data or "job_id" not in data:
            raise ValueError(f"not a script-runner trigger event: {data!r:.200}")
        job = data.get("job")
        offsets = data.get("log_offsets") or {}
        return cls(
            status=data["status"],
            message=data.get("message", ""),
            job_id=data["job_id"],
            job=ScriptRunnerJob.from_dict(job) if job else None,
            error_code=data.get("error_code"),
            limit=data.get("limit"),
            canceled=bool(data.get("canceled", False)),
            log_offsets={k: int(v) for k, v in offsets.items() if k in ("stdout", "stderr")},
            truncation_warned=tuple(data.get("truncation_warned") or ()),
        )
