"""Operators for jobs started elsewhere: submit a script, cancel a job, read a job's logs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_scriptrunner.client import validation
from airflow_provider_scriptrunner.client.errors import ScriptRunnerJobError
from airflow_provider_scriptrunner.client.models import LOG_STREAMS, JobStatus
from airflow_provider_scriptrunner.client.paging import DEFAULT_LOG_PAGE_BYTES, page_size_check
from airflow_provider_scriptrunner.operators._base import (
    DEFAULT_MAX_OUTPUT_BYTES,
    ScriptRunnerOperatorBase,
    without_retries_when_futile,
)
from airflow_provider_scriptrunner.task.output import StreamFollower, TailBuffer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class ScriptRunnerSubmitScriptOperator(ScriptRunnerOperatorBase):
    """
    Start a script and return its job id at once (the async run).

    Follow it with :class:`~airflow_provider_scriptrunner.sensors.scriptrunner.ScriptRunnerJobSensor`,
    read its output with :class:`ScriptRunnerGetJobLogsOperator`, or stop it with
    :class:`ScriptRunnerCancelJobOperator`.

    :param script_id: id of a script in the server's whitelist (templated).
    :param args: list of string arguments (templated).
    :param scriptrunner_conn_id: Airflow connection of type ``scriptrunner`` (templated).
    """

    template_fields: Sequence[str] = ("script_id", "args", "scriptrunner_conn_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {"args": "json"}

    def __init__(self, *, script_id: str, args: Sequence[Any] | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.script_id = script_id
        self.args = args

    def execute(self, context: Context) -> str:
        with without_retries_when_futile():
            script_id = validation.validate_script_id(self.script_id)
            args = validation.validate_args(self.args)
            job_id = self.hook.submit_script(script_id, args)
        self.log.info("Submitted script %r with args %s as job %s", script_id, args, job_id)
        self._publish_job(context, job_id)
        return job_id


class ScriptRunnerCancelJobOperator(ScriptRunnerOperatorBase):
    """
    Cancel a job and wait (bounded) until it has ended; return its final status.

    Canceling a job that already ended succeeds and changes nothing. An unknown job id fails
    with ``JOB_NOT_FOUND``.

    :param job_id: the job to cancel (templated), e.g. ``"{{ ti.xcom_pull('submit') }}"``.
    :param wait_timeout: seconds to wait for the job to end after the cancel request.
    :param poll_interval: seconds between checks while waiting.
    """

    template_fields: Sequence[str] = ("job_id", "scriptrunner_conn_id")

    def __init__(
        self, *, job_id: str, wait_timeout: float = 60.0, poll_interval: float = 0.5, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.wait_timeout = validation.required_seconds("wait_timeout", wait_timeout)
        self.poll_interval = validation.required_seconds("poll_interval", poll_interval)

    def execute(self, context: Context) -> str:
        with without_retries_when_futile(job_given=True):
            job_id = validation.validate_job_id(self.job_id)
            job = self.hook.cancel_job(job_id)
        self._publish_job(context, job_id)
        if job.is_terminal and job.status is not JobStatus.CANCELED:
            self.log.info("Job %s had already ended (%s); nothing to cancel", job_id, job.status.value)
            return job.status.value
        deadline = time.monotonic() + self.wait_timeout
        while not job.is_terminal:
            if time.monotonic() >= deadline:
                raise ScriptRunnerJobError(
                    f"job {job_id} was asked to stop but is still {job.status.value} after {self.wait_timeout:g} s",
                    job,
                )
            time.sleep(self.poll_interval)
            job = self.hook.get_job(job_id)
        self.log.info("Job %s is %s (exit code %s)", job_id, job.status.value, job.exit_code)
        return job.status.value


class ScriptRunnerGetJobLogsOperator(ScriptRunnerOperatorBase):
    """
    Fetch a job's stdout and/or stderr, write them to the task log and return them.

    :param job_id: the job (templated).
    :param stream: ``"stdout"``, ``"stderr"`` or ``"both"``.
    :param offset: byte offset to start at.
    :param limit: bytes to read per stream; None reads to the end.
    :param max_output_bytes: bytes per stream kept in the return value (the end of what was
        read); the task log gets all of it.
    :param log_page_bytes: bytes fetched per request.

    Returns ``{"job_id": ..., "stdout": {"data", "offset", "next_offset", "total_size",
    "truncated"}, "stderr": {...}}`` for the streams asked for; ``truncated`` is true when the
    server dropped output or ``data`` was capped. Read on from ``next_offset``.
    """

    template_fields: Sequence[str] = ("job_id", "stream", "scriptrunner_conn_id")

    def __init__(
        self,
        *,
        job_id: str,
        stream: str = "both",
        offset: int = 0,
        limit: int | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        log_page_bytes: int = DEFAULT_LOG_PAGE_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.stream = stream
        self.offset = validation.offset("offset", offset)
        self.limit = validation.optional_integer(
            "limit", limit, minimum=1, what="a number of bytes (None: everything)"
        )
        self.max_output_bytes = validation.byte_count("max_output_bytes", max_output_bytes)
        self.log_page_bytes = page_size_check("log_page_bytes", log_page_bytes)

    def execute(self, context: Context) -> dict[str, Any]:
        with without_retries_when_futile(job_given=True):
            job_id = validation.validate_job_id(self.job_id)
            if self.stream not in (*LOG_STREAMS, "both"):
                raise ValueError(f"stream must be 'stdout', 'stderr' or 'both', got {self.stream!r}")
            job = self.hook.get_job(job_id)
        streams = LOG_STREAMS if self.stream == "both" else (self.stream,)
        # A running job's last character may still be half written: hold it back then.
        self._publish_job(context, job_id)
        complete = job.is_terminal
        result: dict[str, Any] = {"job_id": job_id}
        for stream in streams:
            follower = StreamFollower(
                stream, self.log, self.log_page_bytes, self.offset, tail=TailBuffer(self.max_output_bytes)
            )
            follower.pump(self.hook, job_id, complete=complete, max_bytes=self.limit)
            follower.finish()
            if complete and follower.server_truncated:
                follower.warn_truncated(job)
            data, truncated = follower.result()
            result[stream] = {
                "data": data,
                "offset": self.offset,
                "next_offset": follower.offset,
                "total_size": follower.total_size or job.stream(stream).size,
                "truncated": truncated,
            }
        return result
