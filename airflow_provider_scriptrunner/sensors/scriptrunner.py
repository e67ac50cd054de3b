"""Sensor that waits for a script-runner job to end."""

from __future__ import annotations

import time
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_scriptrunner._compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    AirflowTaskTimeout,
    default_deferrable,
)
from airflow_provider_scriptrunner.client import validation
from airflow_provider_scriptrunner.client.errors import (
    JOB_NOT_FOUND,
    ScriptRunnerError,
    ScriptRunnerJobNotFoundError,
)
from airflow_provider_scriptrunner.client.models import LOG_STREAMS, ScriptRunnerJob
from airflow_provider_scriptrunner.client.paging import DEFAULT_LOG_PAGE_BYTES, page_size_check
from airflow_provider_scriptrunner.hooks._base import DEFAULT_CONN_ID
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook
from airflow_provider_scriptrunner.task.limits import EXECUTION_TIMEOUT, task_deadline
from airflow_provider_scriptrunner.task.outcome import EventKind, JobEvent, Verdict, judge_job, retry_can_help
from airflow_provider_scriptrunner.task.output import StreamFollower
from airflow_provider_scriptrunner.task.ownership import same_try
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from airflow.sdk import Context


class ScriptRunnerJobSensor(BaseSensorOperator):
    """
    Wait until a job ends; succeed with the job (as a dict) when it succeeded.

    A job that ended ``failed``, ``timed_out`` or ``canceled`` (or that the server does not
    know) fails the sensor at once, without retries: that state cannot change. The sensor
    only watches: it never cancels the job, not even when it times out or is killed.

    Works in ``poke`` and ``reschedule`` modes and, with ``deferrable=True``, in the triggerer.
    Its ``timeout`` and ``execution_timeout`` fail it on time in every mode (while deferred: the
    earlier of the two, counted from the try's start); the job goes on.

    :param job_id: the job to wait for (templated), e.g. ``"{{ ti.xcom_pull('submit') }}"``.
    :param scriptrunner_conn_id: Airflow connection of type ``scriptrunner`` (templated).
    :param deferrable: wait in the triggerer. Default: ``[operators] default_deferrable``.
    :param stream_logs: copy the job's stdout and stderr into the task log (default False: the
        job is usually followed by the task that submitted it). Live in ``poke`` mode and while
        deferred; in ``reschedule`` mode the poke that sees the job end writes all of it.
    :param log_page_bytes: bytes fetched per log request.
    """

    template_fields: Sequence[str] = ("job_id", "scriptrunner_conn_id")

    def __init__(
        self,
        *,
        job_id: str,
        scriptrunner_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        stream_logs: bool = False,
        log_page_bytes: int = DEFAULT_LOG_PAGE_BYTES,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 10.0)
        super().__init__(**kwargs)
        self.job_id = job_id
        self.scriptrunner_conn_id = scriptrunner_conn_id
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.stream_logs = stream_logs
        self.log_page_bytes = page_size_check("log_page_bytes", log_page_bytes)
        self._output: dict[str, StreamFollower] | None = None

    @cached_property
    def hook(self) -> ScriptRunnerHook:
        return ScriptRunnerHook(self.scriptrunner_conn_id)

    def _get_job(self) -> ScriptRunnerJob:
        try:
            return self.hook.get_job(validation.validate_job_id(self.job_id))
        except ScriptRunnerJobNotFoundError as err:
            self._fail(f"job {self.job_id} is unknown to the server (JOB_NOT_FOUND): {err.message}")
        except (TypeError, ValueError) as err:
            if retry_can_help(err):  # a connection to fix in Airflow
                raise
            self._fail(str(err))

    def poke(self, context: Context) -> PokeReturnValue:
        job = self._get_job()
        if self.stream_logs and (job.is_terminal or self.mode == "poke"):
            # In reschedule mode every poke is a new process: only the last one writes the output.
            self._follow_output(job)
        if not job.is_terminal:
            self.log.info("Job %s is %s", job.job_id, job.status.value)
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._judge(job))

    def _follow_output(
        self, job: ScriptRunnerJob, offsets: dict[str, int] | None = None, warned: Iterable[str] = ()
    ) -> None:
        """Write what the job wrote since the last call to the task log (all of it once it ended)."""
        if self._output is None:
            offsets = offsets or {}
            self._output = {
                s: StreamFollower(
                    s, self.log, self.log_page_bytes, offsets.get(s, 0), truncation_warned=s in warned
                )
                for s in LOG_STREAMS
            }
        for follower in self._output.values():
            follower.catch_up(self.hook, job)
            if job.is_terminal:
                follower.finish(job)

    def _judge(self, job: ScriptRunnerJob) -> dict[str, Any]:
        outcome = judge_job(job)
        if outcome.verdict is not Verdict.SUCCESS:
            self._fail(outcome.message)
        return job.to_dict()

    def _fail(self, message: str) -> NoReturn:
        """Fail without retries, or skip under ``soft_fail`` / ``never_fail`` (as in poke mode)."""
        if self.soft_fail or self.never_fail:
            raise AirflowSkipException(f"{message} (skipped: soft_fail/never_fail is set)")
        raise AirflowFailException(message)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        job = self._get_job()
        if job.is_terminal:
            if self.stream_logs:
                self._follow_output(job)
            return self._judge(job)
        start = getattr(context.get("ti"), "start_date", None)
        deadline = task_deadline(
            start if isinstance(start, datetime) else None, self.timeout, self.execution_timeout, time.time()
        )
        self.defer(
            trigger=ScriptRunnerJobTrigger(
                job_id=job.job_id,
                scriptrunner_conn_id=self.scriptrunner_conn_id,
                poll_interval=float(self.poke_interval),
                deadline=None if deadline is None else deadline.to_dict(),
                cancel_on_kill=False,  # a sensor watches; it never stops the job
                cancel_on_timeout=False,
                stream_logs=self.stream_logs,
                log_page_bytes=self.log_page_bytes,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        result = JobEvent.from_dict(event)
        if not same_try(context.get("ti"), result.task):
            # Another try's trigger fired into this try (a reused trigger id): follow the job anew.
            self.log.warning("Ignoring the event of another try's trigger (%s); waiting again", result.task)
            return self.execute(context)
        if result.kind is EventKind.TIMEOUT:
            message = f"{result.message} (the sensor only watches: job {result.job_id} goes on)"
            if result.limit == EXECUTION_TIMEOUT:
                raise AirflowTaskTimeout(message)  # as in poke mode: retries apply
            raise AirflowSensorTimeout(message)
        if result.kind is EventKind.ERROR:
            if result.error_code == JOB_NOT_FOUND:  # cannot change: do not burn retries
                self._fail(result.message)
            raise ScriptRunnerError(result.message)
        if result.job is None:
            self._fail(f"job {result.job_id}: {result.message or 'the trigger reported no job'}")
        if self.stream_logs:
            self._follow_output(result.job, result.log_offsets, result.truncation_warned)
        return self._judge(result.job)
