"""Deferrable trigger that follows a script-runner job from the triggerer."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_scriptrunner import validation
from airflow_provider_scriptrunner.exceptions import ScriptRunnerError, ScriptRunnerJobNotFoundError
from airflow_provider_scriptrunner.hooks.scriptrunner import (
    DEFAULT_CONN_ID,
    DEFAULT_LOG_PAGE_BYTES,
    LOG_STREAMS,
    ScriptRunnerAsyncHook,
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
from airflow_provider_scriptrunner.output import AsyncStreamFollower
from airflow_provider_scriptrunner.transport import JOB, is_transient
from airflow_provider_scriptrunner.watch import IDLE_TIMEOUT, IdleWatch, next_wake

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: Longest pause between polls while the server keeps failing.
MAX_ERROR_BACKOFF = 60.0
#: XCom key of the try that owns the job (pushed by the run operator before it defers).
XCOM_OWNER_TRY = "scriptrunner_try"
#: Task-instance states that end the trigger's try: its job is then canceled.
ENDED_TI_STATES = frozenset(
    {"success", "failed", "skipped", "upstream_failed", "removed", "up_for_retry", "up_for_reschedule"}
)
#: How long reading the task's state (through the triggerer's supervisor) may take.
STATE_READ_TIMEOUT = 60.0


class ScriptRunnerJobTrigger(BaseTrigger):
    """
    Poll a job until it ends, then fire exactly one event.

    The event payload is :meth:`JobEvent.to_dict`: ``status`` is ``success``, ``failure``,
    ``timeout`` or ``error``, with a ``message``, the ``job_id``, the last ``job`` seen, and the
    byte offsets up to which the output was logged (``log_offsets``).

    :param job_id: the job to follow.
    :param scriptrunner_conn_id: Airflow connection of type ``scriptrunner``.
    :param poll_interval: seconds between polls.
    :param end_time: wall-clock deadline (epoch seconds); when it passes the job is canceled
        and a ``timeout`` event fires. None: no deadline.
    :param end_limit: which limit ``end_time`` comes from, as the failure message names it
        (e.g. ``execution_timeout=20 s``).
    :param cancel_on_kill: cancel the job when the task leaves DEFERRED on this try (marked
        failed/success by a user, or Airflow ended the deferral). Never while the task is still
        DEFERRED (triggerer restart, rebalance), and never once another try owns the job.
    :param cancel_on_timeout: cancel the job when ``end_time`` passes (a sensor sets False: it
        only watches).
    :param max_consecutive_errors: transient HTTP failures in a row before giving up with an
        ``error`` event; between them the trigger backs off exponentially.
    :param stream_logs: follow the job's stdout and stderr into the trigger's log (shown in the
        task's log while it is deferred), line by line as ``[stdout] ...`` / ``[stderr] ...``.
    :param log_offsets: byte offsets of stdout and stderr to follow from (what is before them is
        in the task log already).
    :param log_page_bytes: bytes per log request.
    :param idle_timeout: seconds a RUNNING job may go without its output growing before it is
        canceled and a ``timeout`` event fires. None: off.
    :param idle_sizes: the (stdout, stderr) sizes last seen before deferring.
    :param idle_since: when those sizes were first seen while running (epoch seconds).
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
        end_limit: str | None = None,
        stream_logs: bool = False,
        log_offsets: dict[str, int] | None = None,
        log_page_bytes: int = DEFAULT_LOG_PAGE_BYTES,
        idle_timeout: float | None = None,
        idle_sizes: list[int] | None = None,
        idle_since: float | None = None,
    ) -> None:
        super().__init__()
        # Checked here, in the task, so that a bad value fails the task clearly instead of
        # crashing the trigger later in the triggerer.
        validate_job_id(job_id)
        offsets = dict(log_offsets or {})
        if set(offsets) - set(LOG_STREAMS):
            raise ValueError(
                f"log_offsets must map 'stdout'/'stderr' to byte offsets >= 0, got {log_offsets!r}"
            )
        self.log_offsets = {
            stream: validation.offset(f"log_offsets[{stream!r}]", offsets.get(stream, 0))
            for stream in LOG_STREAMS
        }
        self.job_id = job_id
        self.scriptrunner_conn_id = validation.conn_id(scriptrunner_conn_id)
        self.poll_interval = validation.required_seconds("poll_interval", poll_interval)
        self.end_time = validation.timestamp("end_time", end_time)
        self.end_limit = end_limit
        self.cancel_on_kill = bool(cancel_on_kill)
        self.max_consecutive_errors = validation.integer(
            "max_consecutive_errors", max_consecutive_errors, minimum=1
        )
        self.cancel_on_timeout = bool(cancel_on_timeout)
        self.stream_logs = bool(stream_logs)
        self.log_page_bytes = validation.page_size("log_page_bytes", log_page_bytes)
        self.idle = IdleWatch(
            idle_timeout,
            (int(idle_sizes[0]), int(idle_sizes[1])) if idle_sizes is not None else None,
            idle_since,
        )
        self._hook: ScriptRunnerAsyncHook | None = None
        self._followers = {
            s: AsyncStreamFollower(s, self.log, log_page_bytes, self.log_offsets[s]) for s in LOG_STREAMS
        }
        self._kill_decision: asyncio.Future[None] | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "scriptrunner_conn_id": self.scriptrunner_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "end_limit": self.end_limit,
                "cancel_on_kill": self.cancel_on_kill,
                "max_consecutive_errors": self.max_consecutive_errors,
                "cancel_on_timeout": self.cancel_on_timeout,
                "stream_logs": self.stream_logs,
                # The offsets it was deferred with: a re-created trigger (triggerer restart) starts
                # again from there, so lines logged since may appear twice.
                "log_offsets": dict(self.log_offsets),
                "log_page_bytes": self.log_page_bytes,
                "idle_timeout": self.idle.idle_timeout,
                "idle_sizes": None if self.idle.sizes is None else list(self.idle.sizes),
                "idle_since": self.idle.since,
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
            # Every version of Airflow cancels the trigger's task first (Airflow 3.3 then calls
            # on_kill, but not for its own trigger timeout): decide here, once.
            await self._handle_kill()
            raise
        # The event is final: release the client now (``airflow dags test`` never calls cleanup()).
        await self.cleanup()
        yield TriggerEvent(event.to_dict())

    # -- following the job -----------------------------------------------------------------------

    async def _follow(self) -> JobEvent:
        errors = 0
        job: ScriptRunnerJob | None = None
        while True:
            if self.end_time is not None and time.time() >= self.end_time:
                return await self._time_out(job)
            try:
                job = await self.hook.get_job(self.job_id)
                if self.stream_logs:
                    await self._pump(job)
                errors = 0
            except ScriptRunnerJobNotFoundError as err:
                message = f"job {self.job_id} is unknown to the server (JOB_NOT_FOUND): {err.message}"
                return self._event(EVENT_ERROR, message, job, error_code=err.error_code)
            except ScriptRunnerError as err:
                if not is_transient(err, JOB):
                    # Rejected credentials, a wrong URL, a bad connection: waiting will not help.
                    message = f"cannot follow job {self.job_id}: {err}"
                    return self._event(EVENT_ERROR, message, job, error_code=getattr(err, "error_code", None))
                errors += 1
                if errors >= self.max_consecutive_errors:
                    return self._event(
                        EVENT_ERROR,
                        f"gave up following job {self.job_id} after {errors} failed polls in a row: {err}",
                        job,
                    )
                delay = min(self.poll_interval * 2 ** (errors - 1), MAX_ERROR_BACKOFF)
                self.log.warning(
                    "Polling job %s failed (%d in a row); next try in %.1f s: %s",
                    self.job_id,
                    errors,
                    delay,
                    err,
                )
                await asyncio.sleep(next_wake(time.time(), delay, self.end_time))
                continue
            if job.is_terminal:
                verdict = judge_job(job)
                return self._event(EVENT_SUCCESS if job.is_success else EVENT_FAILURE, verdict.message, job)
            seen = self.idle.observe(job, time.time())
            if seen == "disabled":
                self.log.warning(self.idle.disabled_message(self.job_id))
            elif seen == "stalled":
                canceled = await self._cancel_job(f"it wrote no output for {self.idle.idle_timeout:g} s")
                return self._event(
                    EVENT_TIMEOUT,
                    self.idle.stall_message(self.job_id),
                    canceled or job,
                    limit=IDLE_TIMEOUT,
                    canceled=canceled is not None,
                )
            await asyncio.sleep(next_wake(time.time(), self.poll_interval, self.end_time, self.idle.due()))

    async def _pump(self, job: ScriptRunnerJob) -> None:
        """Log what each stream gained since the last poll (all of it once the job has ended)."""
        for stream, follower in self._followers.items():
            if getattr(job, f"{stream}_size") > follower.offset:
                await follower.pump(self.hook, self.job_id, complete=job.is_terminal)
            if job.is_terminal:
                follower.writer.flush()
            if getattr(job, f"{stream}_truncated"):
                follower.warn_truncated(self.job_id, getattr(job, f"{stream}_size"))

    def _event(self, status: str, message: str, job: ScriptRunnerJob | None, **fields: Any) -> JobEvent:
        return JobEvent(
            status,
            message,
            self.job_id,
            job,
            log_offsets={s: f.logged_offset for s, f in self._followers.items()},
            truncation_warned=tuple(s for s, f in self._followers.items() if f.truncation_warned),
            **fields,
        )

    async def _time_out(self, job: ScriptRunnerJob | None) -> JobEvent:
        limit = self.end_limit or "the deadline"
        if not self.cancel_on_timeout:
            return self._event(
                EVENT_TIMEOUT,
                f"job {self.job_id} did not finish within {limit}",
                job,
                limit=self._limit_name(),
            )
        canceled = await self._cancel_job(f"{limit} passed")
        outcome = "it was canceled" if canceled else "canceling it failed (see the log above)"
        message = f"job {self.job_id} did not finish within {limit}; {outcome}"
        return self._event(
            EVENT_TIMEOUT, message, canceled or job, limit=self._limit_name(), canceled=canceled is not None
        )

    def _limit_name(self) -> str | None:
        return self.end_limit.partition("=")[0] if self.end_limit else None

    async def _cancel_job(self, why: str) -> ScriptRunnerJob | None:
        try:
            job = await self.hook.cancel_job(self.job_id)
        except ScriptRunnerError as err:
            self.log.error("Could not cancel job %s (%s): %s", self.job_id, why, err)
            return None
        self.log.info("Canceled job %s because %s (status now %s)", self.job_id, why, job.status.value)
        return job

    # -- when the task is killed or cleared while deferred ---------------------------------------

    async def on_kill(self) -> None:
        """Airflow 3.3+: the triggerer's hook for a user's action on the deferred task."""
        await self._handle_kill()
        await self.cleanup()

    async def _handle_kill(self) -> None:
        """
        Cancel the job if this try is over: decided once, whichever of run/on_kill comes first.

        The decision runs as a task of its own, shielded: a triggerer cancels the trigger's task
        again at every state sync until it has finished, which must not cut the decision short
        (reading the task's state can take seconds); on_kill then waits for that same decision.
        """
        if not self.cancel_on_kill:
            return
        if self._kill_decision is None:
            self._kill_decision = asyncio.ensure_future(self._decide_and_cancel())
        await asyncio.shield(self._kill_decision)

    async def _decide_and_cancel(self) -> None:
        try:
            cancel, why = await self.cancel_decision()
            if cancel:
                await self._cancel_job(why)
            else:
                self.log.info("Not canceling job %s: %s", self.job_id, why)
        finally:
            await self.cleanup()  # it may outlive the triggerer's own call of cleanup()

    async def cancel_decision(self) -> tuple[bool, str]:
        """
        Whether the trigger's job must be canceled now that the trigger is being stopped, and why.

        - the task is still DEFERRED: a triggerer restart, a rebalance, or a trigger reassigned to
          another triggerer (Airflow 3.3 calls on_kill then too): the job goes on;
        - another try owns the job (it reattached, or started its own): leave it to that try;
        - the task ended on this try (marked failed/success, up for retry, ...): cancel;
        - the deadline passed and Airflow ended the deferral (its trigger timeout): cancel;
        - otherwise the task was cleared and its next try reattaches to the job: leave it.

        When the task's state cannot be read, nothing is canceled.
        """
        try:
            state = await asyncio.wait_for(self._task_instance_state(), STATE_READ_TIMEOUT)
        except Exception as err:  # noqa: BLE001 - any doubt means: leave the job alone
            return False, f"could not read the task's state ({type(err).__name__}: {err})"
        state = getattr(state, "value", state)
        if state == "deferred":
            return False, "the task is still deferred (a triggerer restart or rebalance); the job goes on"
        own_try = getattr(self.task_instance, "try_number", None)
        try:
            owner = await asyncio.wait_for(self._owner_try(), STATE_READ_TIMEOUT)
        except Exception as err:  # noqa: BLE001 - the state decides alone
            self.log.warning(
                "Could not read which try owns job %s (%s); deciding by the task's state", self.job_id, err
            )
            owner = own_try
        if own_try is not None and owner != own_try:
            newer = f"try {owner}" if owner is not None else "a newer try (it cleared this try's record)"
            return False, f"{newer} of the task owns the job now, not this trigger's try {own_try}"
        if state in ENDED_TI_STATES:
            return True, f"the task is {state}: its try {own_try} is over"
        if self.end_time is not None and time.time() >= self.end_time:
            return (
                True,
                f"Airflow ended the deferral after {self.end_limit or 'the deadline'} passed (task {state})",
            )
        return False, f"the task was cleared (now {state}): its next try reattaches to the job"

    async def _task_instance_state(self) -> str | None:
        ti = self.task_instance
        if ti is None:
            raise LookupError("the trigger has no task instance (e.g. under `airflow dags test`)")
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
        from asgiref.sync import sync_to_async

        map_index = ti.map_index if getattr(ti, "map_index", None) is not None else -1
        states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
            dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=map_index
        )
        key = f"{ti.task_id}_{map_index}" if map_index >= 0 else ti.task_id
        return states[ti.run_id][key]

    async def _owner_try(self) -> int | None:
        """The try number the run operator recorded as the job's owner (XCom); None when none is."""
        ti = self.task_instance
        if ti is None:
            raise LookupError("the trigger has no task instance")
        from asgiref.sync import sync_to_async

        from airflow_provider_scriptrunner._compat import XCom

        map_index = ti.map_index if getattr(ti, "map_index", None) is not None else -1
        value = await sync_to_async(XCom.get_one)(
            key=XCOM_OWNER_TRY, dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=map_index
        )
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    async def cleanup(self) -> None:
        if self._hook is not None:
            await self._hook.close()
