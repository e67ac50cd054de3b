"""
What a finished job means for the task: the one place where outcome rules live, and the event a
trigger reports them with.

The run operator (worker and deferred paths alike), the sensor and the trigger all call
:func:`judge_job`, so "exit code 3 means skip" or "code -1 means killed or lost" is decided here
and nowhere else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_scriptrunner.client.errors import (
    ScriptRunnerApiError,
    ScriptRunnerConfigError,
    ScriptRunnerJobNotFoundError,
)
from airflow_provider_scriptrunner.client.models import LOG_STREAMS, JobStatus, ScriptRunnerJob
from airflow_provider_scriptrunner.client.validation import skip_codes

if TYPE_CHECKING:
    from collections.abc import Iterable

#: Server error codes a new try gets again: the script is not in the whitelist, or the arguments
#: break its rules (``args`` in scripts.json).
PERMANENT_ERROR_CODES = frozenset({"SCRIPT_NOT_FOUND", "INVALID_ARGS"})
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


def job_result(
    job: ScriptRunnerJob,
    stdout: tuple[str, bool],
    stderr: tuple[str, bool],
    result: Any = None,
) -> dict[str, Any]:
    """
    The run operator's return value for a job that succeeded, whichever process ends the task.

    :param stdout: the kept end of stdout, and whether it is not all of it (likewise ``stderr``).
    :param result: what ``output_processor`` made of stdout (None without one).
    """
    return {
        "job_id": job.job_id,
        "script_id": job.script_id,
        "status": job.status.value,
        "exit_code": job.exit_code,
        "stdout": stdout[0],
        "stderr": stderr[0],
        "stdout_truncated": stdout[1],
        "stderr_truncated": stderr[1],
        "duration_ms": job.duration_ms,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "result": result,
    }


@dataclass(frozen=True)
class TriggerEnd:
    """
    What a trigger needs to end its task itself (``end_in_triggerer``), so that no worker runs
    again after the job: how to judge the job and what to push as the task's XComs.

    :param skip_on_exit_code: exit codes that skip the task.
    :param max_output_bytes: bytes of stdout and of stderr kept in the return value.
    :param push_result: push the return value (the operator's ``do_xcom_push``).
    :param multiple_outputs: also push each key of the return value as its own XCom.
    :param skip: the trigger may end a skipped task too (False when it has an ``on_skipped_callback``,
        which only a worker runs).
    """

    skip_on_exit_code: tuple[int, ...] = ()
    max_output_bytes: int = 65536
    push_result: bool = True
    multiple_outputs: bool = False
    skip: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "skip_on_exit_code": list(self.skip_on_exit_code),
            "max_output_bytes": self.max_output_bytes,
            "push_result": self.push_result,
            "multiple_outputs": self.multiple_outputs,
            "skip": self.skip,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TriggerEnd | None:
        if data is None:
            return None
        return cls(
            skip_on_exit_code=tuple(sorted(skip_codes(data.get("skip_on_exit_code")))),
            max_output_bytes=int(data.get("max_output_bytes", 65536)),
            push_result=bool(data.get("push_result", True)),
            multiple_outputs=bool(data.get("multiple_outputs", False)),
            skip=bool(data.get("skip", True)),
        )


def retry_can_help(err: BaseException, *, job_given: bool = False) -> bool:
    """
    Whether another try of the task could end otherwise than ``err`` did; False: fail it at once.

    :param job_given: the task was given the job's id (a job the server does not know now will
        not appear later). A task that submitted the job itself may submit again.

    A retry cannot help with input the provider rejects before sending (``TypeError`` and
    ``ValueError`` of its checks), an unknown script or rejected arguments (:data:`PERMANENT_ERROR_CODES`),
    or an unknown job the task was given. It can with everything else: an unreachable or failing
    server, a timeout, rejected credentials or a bad connection (both can be fixed in Airflow
    before the next try), and a script's non-zero exit.
    """
    if isinstance(err, ScriptRunnerConfigError):
        return True
    if isinstance(err, (TypeError, ValueError)):
        return False
    if job_given and isinstance(err, ScriptRunnerJobNotFoundError):
        return False
    return not (isinstance(err, ScriptRunnerApiError) and err.error_code in PERMANENT_ERROR_CODES)


class EventKind(str, enum.Enum):
    """Why a trigger fired."""

    #: The job ended (the task judges how, with :func:`judge_job`).
    ENDED = "ended"
    #: A limit passed first; ``JobEvent.limit`` names it.
    TIMEOUT = "timeout"
    #: The job could not be followed.
    ERROR = "error"


@dataclass(frozen=True)
class JobEvent:
    """
    What a trigger reports back to the task: plain JSON across the trigger boundary.

    :param kind: why the trigger fired.
    :param message: what happened, in words (the failure message for ``timeout`` and ``error``).
    :param job: the last job seen, if any.
    :param error_code: for ``error``: the server's error code when it gave one (``JOB_NOT_FOUND``).
    :param limit: for ``timeout``: ``timeout``, ``execution_timeout`` or ``idle_timeout``.
    :param canceled: the trigger canceled the job itself.
    :param log_offsets: byte offsets of stdout and stderr up to which the output is in the log.
    :param truncation_warned: the streams whose truncation the trigger already reported.
    :param task: the try the trigger was fired for (dag, run, task, map index, try number), so that
        an event that reaches another try is known as not its own.
    """

    kind: EventKind
    message: str
    job_id: str
    job: ScriptRunnerJob | None = None
    error_code: str | None = None
    limit: str | None = None
    canceled: bool = False
    log_offsets: dict[str, int] = field(default_factory=dict)
    truncation_warned: tuple[str, ...] = ()
    task: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "message": self.message,
            "job_id": self.job_id,
            "job": self.job.to_dict() if self.job else None,
            "error_code": self.error_code,
            "limit": self.limit,
            "canceled": self.canceled,
            "log_offsets": dict(self.log_offsets),
            "truncation_warned": list(self.truncation_warned),
            "task": self.task,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobEvent:
        if not isinstance(data, dict) or "kind" not in data or "job_id" not in data:
            raise ValueError(f"not a script-runner trigger event: {data!r:.200}")
        job = data.get("job")
        offsets = data.get("log_offsets") or {}
        return cls(
            kind=EventKind(data["kind"]),
            message=data.get("message", ""),
            job_id=data["job_id"],
            job=ScriptRunnerJob.from_dict(job) if job else None,
            error_code=data.get("error_code"),
            limit=data.get("limit"),
            canceled=bool(data.get("canceled", False)),
            log_offsets={k: int(v) for k, v in offsets.items() if k in LOG_STREAMS},
            truncation_warned=tuple(data.get("truncation_warned") or ()),
            task=data.get("task"),
        )
