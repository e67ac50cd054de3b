"""Deferrable trigger that follows a script-runner job from the triggerer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_scriptrunner._compat import TRIGGER_HAS_ON_KILL
from airflow_provider_scriptrunner.exceptions import ScriptRunnerError, ScriptRunnerJobNotFoundError
from airflow_provider_scriptrunner.hooks.scriptrunner import (
    DEFAULT_CONN_ID,
    ENDPOINTS,
    ScriptRunnerAsyncHook,
    is_transient,
    validate_job_id,
)
from airflow_provider_scriptrunner.models import (
    EVENT_ERROR,
    EVENT_FAILURE,
    EVENT_SUCCESS,
    EVENT_TIMEOUT,
    JobEvent,
    ScriptRunnerJob,
)
from airflow_provider_scriptrunner.outcome import judge_job

#: Longest pause between polls while the server keeps failing.
MAX_ERROR_BACKOFF = 60.0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ScriptRunnerJobTrigger(BaseTrigger):
    """
    Poll a job until it ends, then fire exactly one event.

    The event payload is :meth:`JobEvent.to_dict`: ``status`` is ``success``, ``failure``,
    ``timeout`` or ``error``, with a ``message``, the ``job_id`` and the last ``job`` seen.

    :param job_id: the job to follow.
    :param scriptrunner_conn_id: Airflow connection of type ``scriptrunner``.
    :param poll_interval: seconds between polls.
    :param end_time: wall-clock deadline (epoch seconds); when it passes the job is canceled
        and a ``timeout`` event fires. None: no deadline.
    :param cancel_on_kill: cancel the job when the task is killed while deferred (marked
        failed/success or cleared by a user). Never on a triggerer restart or rebalance.
    :param cancel_on_timeout: cancel the job when ``end_time`` passes (a sensor sets False: it
        only watches).
    :param max_consecutive_errors: transient HTTP failures in a row before giving up with an
        ``error`` event; between them the trigger backs off exponentially.
    """

    def __init__(
        self,
        job_id: str,
        scriptrunner_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 10.0,
        end_time: float | None = None,
        cancel_on_kill: bool = True,
        max_consecutive_errors: int = 8,
        cancel_on_timeout: bool = True,
    ) -> None:
        super().__init__()
        # Checked here, in the task, so that a bad value fails the task clearly instead of
        # crashing the trigger later in the triggerer.
        validate_job_id(job_id)
        if not isinstance(scriptrunner_conn_id, str) or not scriptrunner_conn_id:
            raise ValueError(f"scriptrunner_conn_id must be a non-empty connection id, got {scriptrunner_conn_id!r}")
        if not _is_number(poll_interval) or not poll_interval > 0 or poll_interval == float("inf"):
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        if end_time is not None and (not _is_number(end_time) or end_time != end_time):
            raise ValueError(f"end_time must be a wall-clock timestamp (epoch seconds) or None, got {end_time!r}")
        if isinstance(max_consecutive_errors, bool) or not isinstance(max_consecutive_errors, int) or max_consecutive_errors < 1:
            raise ValueError(f"max_consecutive_errors must be an int >= 1, got {max_consecutive_errors!r}")
        self.job_id = job_id
        self.scriptrunner_conn_id = scriptrunner_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = None if end_time is None else float(end_time)
        self.cancel_on_kill = bool(cancel_on_kill)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.cancel_on_timeout = bool(cancel_on_timeout)
        self._hook: ScriptRunnerAsyncHook | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "scriptrunner_conn_id": self.scriptrunner_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "cancel_on_kill": self.cancel_on_kill,
                "max_consecutive_errors": self.max_consecutive_errors,
                "cancel_on_timeout": self.cancel_on_timeout,
            },
        )

    @property
    def hook(self) -> ScriptRunnerAsyncHook:
        # Our own backoff below handles transient errors, so the hook does not retry as well.
        if self._hook is None:
            self._hook = ScriptRunnerAsyncHook(self.scriptrunner_conn_id, retries=0)
        return self._hook

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            event = await self._follow()
        except asyncio.CancelledError:
            if not TRIGGER_HAS_ON_KILL and self.cancel_on_kill and await self.safe_to_cancel():
                await self._cancel_job("the task is no longer deferred")
            raise  # Airflow 3.3 only calls on_kill when the cancellation propagates
        # The event is final: release the client now (``airflow dags test`` never calls cleanup()).
        await self.cleanup()
        yield TriggerEvent(event.to_dict())

    async def _follow(self) -> JobEvent:
        errors = 0
        job: ScriptRunnerJob | None = None
        while True:
            if self.end_time is not None and time.time() >= self.end_time:
                return await self._time_out(job)
            try:
                job = await self.hook.get_job(self.job_id)
                errors = 0
            except ScriptRunnerJobNotFoundError as err:
                message = f"job {self.job_id} is unknown to the server (JOB_NOT_FOUND): {err.message}"
                return JobEvent(EVENT_ERROR, message, self.job_id, job, error_code=err.error_code)
            except ScriptRunnerError as err:
                if not is_transient(err, ENDPOINTS["job"]):
                    # Rejected credentials, a wrong URL, a bad connection: waiting will not help.
                    message = f"cannot follow job {self.job_id}: {err}"
                    return JobEvent(EVENT_ERROR, message, self.job_id, job, error_code=getattr(err, "error_code", None))
                errors += 1
                if errors >= self.max_consecutive_errors:
                    return JobEvent(EVENT_ERROR, f"gave up following job {self.job_id} after {errors} failed polls in a row: {err}", self.job_id, job)
                delay = min(self.poll_interval * 2 ** (errors - 1), MAX_ERROR_BACKOFF)
                self.log.warning("Polling job %s failed (%d in a row); next try in %.1f s: %s", self.job_id, errors, delay, err)
                await asyncio.sleep(self._until_deadline(delay))
                continue
            if job.is_terminal:
                verdict = judge_job(job)
                return JobEvent(EVENT_SUCCESS if job.is_success else EVENT_FAILURE, verdict.message, self.job_id, job)
            await asyncio.sleep(self._until_deadline(self.poll_interval))

    def _until_deadline(self, delay: float) -> float:
        if self.end_time is None:
            return delay
        return max(0.0, min(delay, self.end_time - time.time()))

    async def _time_out(self, job: ScriptRunnerJob | None) -> JobEvent:
        if not self.cancel_on_timeout:
            return JobEvent(EVENT_TIMEOUT, f"job {self.job_id} did not finish before the deadline", self.job_id, job)
        job = await self._cancel_job("its deadline passed") or job
        return JobEvent(EVENT_TIMEOUT, f"job {self.job_id} did not finish before the task's timeout; it was canceled", self.job_id, job)

    async def _cancel_job(self, why: str) -> ScriptRunnerJob | None:
        try:
            job = await self.hook.cancel_job(self.job_id)
        except ScriptRunnerError as err:
            self.log.error("Could not cancel job %s (%s): %s", self.job_id, why, err)
            return None
        self.log.info("Canceled job %s because %s (status now %s)", self.job_id, why, job.status.value)
        return job

    async def safe_to_cancel(self) -> bool:
        """
        Whether the task instance has left DEFERRED, i.e. a user killed it (Airflow 3.1/3.2 path).

        A triggerer restart or rebalance also cancels the trigger, but leaves the task DEFERRED:
        then the job must go on. When the state cannot be read, do not cancel.
        """
        try:
            state = await self._task_instance_state()
        except Exception as err:  # noqa: BLE001 - any doubt means: leave the job alone
            self.log.warning("Not canceling job %s: could not read the task's state (%s)", self.job_id, err)
            return False
        from airflow.sdk import TaskInstanceState

        return state != TaskInstanceState.DEFERRED

    async def _task_instance_state(self) -> str | None:
        ti = self.task_instance
        if ti is None:
            raise LookupError("the trigger has no task instance (e.g. under `airflow dags test`)")
        from asgiref.sync import sync_to_async
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        map_index = ti.map_index if getattr(ti, "map_index", None) is not None else -1
        states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
            dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=map_index
        )
        key = f"{ti.task_id}_{map_index}" if map_index >= 0 else ti.task_id
        return states[ti.run_id][key]

    async def on_kill(self) -> None:
        """Airflow 3.3+: a user marked the deferred task failed/success or cleared it."""
        if self.cancel_on_kill and await self.safe_to_cancel():
            await self._cancel_job("the task was stopped by a user")
        await self.cleanup()

    async def cleanup(self) -> None:
        if self._hook is not None:
            await self._hook.close()
