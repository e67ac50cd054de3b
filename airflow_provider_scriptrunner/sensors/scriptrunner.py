"""Sensor that waits for a script-runner job to end."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_scriptrunner._compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    default_deferrable,
)
from airflow_provider_scriptrunner.exceptions import JOB_NOT_FOUND, ScriptRunnerError, ScriptRunnerJobNotFoundError
from airflow_provider_scriptrunner.hooks.scriptrunner import DEFAULT_CONN_ID, ScriptRunnerHook, validate_job_id
from airflow_provider_scriptrunner.models import EVENT_ERROR, EVENT_TIMEOUT, JobEvent, ScriptRunnerJob
from airflow_provider_scriptrunner.outcome import Verdict, judge_job
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class ScriptRunnerJobSensor(BaseSensorOperator):
    """
    Wait until a job ends; succeed with the job (as a dict) when it succeeded.

    A job that ended ``failed``, ``timed_out`` or ``canceled`` (or that the server does not
    know) fails the sensor at once, without retries: that state cannot change. The sensor
    only watches: it never cancels the job, not even when it times out or is killed.

    Works in ``poke`` and ``reschedule`` modes and, with ``deferrable=True``, in the triggerer.

    :param job_id: the job to wait for (templated), e.g. ``"{{ ti.xcom_pull('submit') }}"``.
    :param scriptrunner_conn_id: Airflow connection of type ``scriptrunner`` (templated).
    :param deferrable: wait in the triggerer. Default: ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("job_id", "scriptrunner_conn_id")

    def __init__(
        self,
        *,
        job_id: str,
        scriptrunner_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 10.0)
        super().__init__(**kwargs)
        self.job_id = job_id
        self.scriptrunner_conn_id = scriptrunner_conn_id
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)

    @cached_property
    def hook(self) -> ScriptRunnerHook:
        return ScriptRunnerHook(self.scriptrunner_conn_id)

    def _get_job(self) -> ScriptRunnerJob:
        try:
            return self.hook.get_job(validate_job_id(self.job_id))
        except ScriptRunnerJobNotFoundError as err:
            self._fail(f"job {self.job_id} is unknown to the server (JOB_NOT_FOUND): {err.message}")

    def poke(self, context: Context) -> PokeReturnValue:
        job = self._get_job()
        if not job.is_terminal:
            self.log.info("Job %s is %s", job.job_id, job.status.value)
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._judge(job))

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
            return self._judge(job)
        timeout = self.timeout.total_seconds() if isinstance(self.timeout, timedelta) else float(self.timeout)
        self.defer(
            trigger=ScriptRunnerJobTrigger(
                job_id=job.job_id,
                scriptrunner_conn_id=self.scriptrunner_conn_id,
                poll_interval=float(self.poke_interval),
                end_time=time.time() + timeout,
                cancel_on_kill=False,  # a sensor watches; it never stops the job
                cancel_on_timeout=False,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        result = JobEvent.from_dict(event)
        if result.status == EVENT_TIMEOUT:
            raise AirflowSensorTimeout(f"job {result.job_id} did not end within the sensor's timeout")
        if result.status == EVENT_ERROR:
            if result.error_code == JOB_NOT_FOUND:  # cannot change: do not burn retries
                self._fail(result.message)
            raise ScriptRunnerError(result.message)
        if result.job is None:
            self._fail(f"job {result.job_id}: {result.message or 'the trigger reported no job'}")
        return self._judge(result.job)
