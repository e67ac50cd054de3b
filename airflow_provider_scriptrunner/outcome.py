"""
What a finished job means for the task: the one place where outcome rules live.

The run operator (worker and deferred paths alike) and the sensor both call
:func:`judge_job`, so "exit code 3 means skip" or "code -1 means killed or lost" is decided here
and nowhere else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_scriptrunner.models import JobStatus, ScriptRunnerJob
from airflow_provider_scriptrunner.validation import skip_codes

if TYPE_CHECKING:
    from collections.abc import Iterable

#: How much of the end of stderr a failure message quotes.
STDERR_TAIL_CHARS = 2000


class Verdict(str, enum.Enum):
    SUCCESS = "success"
    SKIP = "skip"
    FAIL = "fail"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    message: str


def stderr_tail(text: str, limit: int = STDERR_TAIL_CHARS) -> str:
    text = text.rstrip()
    return text if len(text) <= limit else "..." + text[-limit:]


def judge_job(
    job: ScriptRunnerJob, skip_on_exit_code: int | Iterable[int] | None = None, stderr: str | None = None
) -> Outcome:
    """
    Decide what a terminal job means for the task.

    :param job: the finished job.
    :param skip_on_exit_code: exit codes that skip the task instead of failing (or succeeding) it.
    :param stderr: the end of the job's stderr for failure messages; defaults to the job's preview.
    """
    name = f"script {job.script_id!r} (job {job.job_id})" if job.script_id else f"job {job.job_id}"
    code = job.exit_code
    if code is not None and code != -1 and code in skip_codes(skip_on_exit_code):
        return Outcome(
            Verdict.SKIP, f"{name} exited with code {code}, which is in skip_on_exit_code: skipping"
        )
    if job.status is JobStatus.SUCCEEDED:
        return Outcome(Verdict.SUCCESS, f"{name} succeeded")
    if job.status is JobStatus.TIMED_OUT:
        return Outcome(
            Verdict.FAIL,
            f"{name} timed out: the server's script timeout (timeoutSec in its scripts.json) fired and stopped it",
        )
    if job.status is JobStatus.CANCELED:
        return Outcome(Verdict.FAIL, f"{name} was canceled on the server")
    if job.was_killed_or_lost:
        return Outcome(
            Verdict.FAIL,
            f"{name} ended with code -1: the script was killed by a signal, or lost when the script-runner "
            "server restarted (the server reports both the same way)",
        )
    if job.status is JobStatus.FAILED:
        tail = stderr_tail(job.stderr_preview if stderr is None else stderr)
        detail = f". End of stderr:\n{tail}" if tail else " (stderr was empty)"
        return Outcome(Verdict.FAIL, f"{name} failed with exit code {code}{detail}")
    raise ValueError(f"{name} has not finished (status {job.raw_status!r}); only finished jobs can be judged")
