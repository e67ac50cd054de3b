"""
The limits a running job is held to, enforced alike by the worker loop and by the trigger.

- :func:`task_deadline`: one wall-clock deadline, the earliest of the operator's ``timeout`` and
  the task's ``execution_timeout``, both counted from the try's start (``ti.start_date``).
- :class:`IdleWatch`: ``idle_timeout``, a RUNNING job whose stdout and stderr sizes have not grown
  for that long is stalled.

Both cross the trigger boundary as small JSON dicts (``to_dict``/``from_dict``) of epoch seconds
and byte sizes: deadlines that cross into the triggerer are wall-clock times, never
``time.monotonic()`` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_scriptrunner.client.models import JobStatus, ScriptRunnerJob
from airflow_provider_scriptrunner.client.validation import offset, positive_seconds, timestamp

TIMEOUT = "timeout"
EXECUTION_TIMEOUT = "execution_timeout"
IDLE_TIMEOUT = "idle_timeout"


@dataclass(frozen=True)
class Deadline:
    """A wall-clock deadline and the limit it comes from."""

    at: float
    limit: str
    seconds: float

    def describe(self) -> str:
        """How the failure message names the limit, e.g. ``execution_timeout=20 s``."""
        return f"{self.limit}={self.seconds:g} s"

    def passed(self, now: float) -> bool:
        return now >= self.at

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "limit": self.limit, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Deadline | None:
        if data is None:
            return None
        if not isinstance(data, dict) or data.get("limit") not in (TIMEOUT, EXECUTION_TIMEOUT):
            raise ValueError(f"deadline must be a dict from Deadline.to_dict(), got {data!r:.200}")
        at = timestamp("deadline['at']", data.get("at"))
        seconds = positive_seconds("deadline['seconds']", data.get("seconds"))
        if at is None or seconds is None:
            raise ValueError(f"deadline needs 'at' and 'seconds', got {data!r:.200}")
        return cls(at, data["limit"], seconds)


def _epoch(start: datetime | float | None, now: float) -> float:
    if start is None:
        return now
    if isinstance(start, datetime):
        return start.timestamp()
    return float(start)


def task_deadline(
    start: datetime | float | None,
    timeout: float | None,
    execution_timeout: timedelta | float | None,
    now: float,
) -> Deadline | None:
    """
    The earliest of ``timeout`` and ``execution_timeout``, counted from ``start`` (the try's start).

    :param start: when the try started (``ti.start_date``); None counts from ``now``.
    :param timeout: the operator's own ``timeout`` in seconds, or None.
    :param execution_timeout: the task's ``execution_timeout``, or None.
    :param now: the current wall-clock time (epoch seconds).
    :return: None when neither limit is set. On a tie ``timeout`` is named.
    """
    begin = _epoch(start, now)
    candidates = [
        Deadline(begin + value, limit, value)
        for limit, value in (
            (TIMEOUT, positive_seconds(TIMEOUT, timeout)),
            (EXECUTION_TIMEOUT, positive_seconds(EXECUTION_TIMEOUT, execution_timeout)),
        )
        if value is not None
    ]
    return min(candidates, key=lambda d: d.at) if candidates else None


class IdleWatch:
    """
    Detects a stalled job: RUNNING, and neither stdout nor stderr has grown for ``idle_timeout`` s.

    Queued time does not count: the clock starts when the job is first seen running. A stream the
    server truncated cannot grow any more, although the script may still write to it, so once
    either stream is truncated idleness cannot be seen: the watch turns itself off (never a false
    stall) and :meth:`observe` says so once, for a warning.

    :param idle_timeout: seconds without output growth; None turns the watch off.
    :param sizes: the (stdout, stderr) sizes last seen, e.g. by the worker before deferring.
    :param since: when those sizes were first seen while running (epoch seconds), or None.
    """

    def __init__(
        self, idle_timeout: float | None, sizes: tuple[int, int] | None = None, since: float | None = None
    ) -> None:
        self.idle_timeout = positive_seconds(IDLE_TIMEOUT, idle_timeout)
        self.sizes = tuple(sizes) if sizes is not None else None
        self.since = since
        self.disabled = False

    def observe(self, job: ScriptRunnerJob, now: float) -> str | None:
        """
        Take a poll's view of the job. Returns ``"stalled"`` when the idle limit is reached,
        ``"disabled"`` the one time the watch turns off because of a truncated stream, else None.
        """
        if self.idle_timeout is None or self.disabled:
            return None
        if job.stdout_truncated or job.stderr_truncated:
            self.disabled = True
            return "disabled"
        if job.status is not JobStatus.RUNNING:
            self.since = None
            return None
        sizes = (job.stdout_size, job.stderr_size)
        if self.since is None or sizes != self.sizes:
            self.sizes, self.since = sizes, now
        return "stalled" if now - self.since >= self.idle_timeout else None

    def due(self) -> float | None:
        """When the job becomes stalled if nothing grows (epoch seconds), or None."""
        if self.idle_timeout is None or self.disabled or self.since is None:
            return None
        return self.since + self.idle_timeout

    def stall_message(self, job_id: str) -> str:
        return f"job {job_id} was canceled: no output for {self.idle_timeout:g} s (idle_timeout={self.idle_timeout:g} s)"

    def disabled_message(self, job_id: str) -> str:
        return (
            f"idle_timeout is off for job {job_id} from now on: the server truncated its output "
            "(runner.maxLogBytesPerStream), so its sizes no longer grow and a stall cannot be told from work"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "idle_timeout": self.idle_timeout,
            "sizes": list(self.sizes) if self.sizes is not None else None,
            "since": self.since,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> IdleWatch:
        """The watch :meth:`to_dict` describes; None: a watch that is off."""
        if data is None:
            return cls(None)
        if not isinstance(data, dict):
            raise ValueError(f"idle must be a dict from IdleWatch.to_dict(), got {data!r:.200}")
        sizes = data.get("sizes")
        if sizes is not None and (not isinstance(sizes, (list, tuple)) or len(sizes) != 2):
            raise ValueError(f"idle['sizes'] must be [stdout size, stderr size], got {sizes!r:.80}")
        return cls(
            data.get("idle_timeout"),
            (offset("idle['sizes'][0]", sizes[0]), offset("idle['sizes'][1]", sizes[1]))
            if sizes is not None
            else None,
            timestamp("idle['since']", data.get("since")),
        )


def next_wake(now: float, delay: float, *due: float | None) -> float:
    """Seconds to sleep: ``delay``, or less when a deadline in ``due`` comes first (never negative)."""
    wake = now + delay
    for moment in due:
        if moment is not None:
            wake = min(wake, moment)
    return max(0.0, wake - now)
