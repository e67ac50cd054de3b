"""Deferrable trigger that follows a script-runner job from the triggerer."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TaskSkippedEvent, TaskSuccessEvent, TriggerEvent

from airflow_provider_scriptrunner.client import api, validation
from airflow_provider_scriptrunner.client.errors import ScriptRunnerError, ScriptRunnerJobNotFoundError
from airflow_provider_scriptrunner.client.models import LOG_STREAMS, JobStatus
from airflow_provider_scriptrunner.client.paging import DEFAULT_LOG_PAGE_BYTES, page_size_check
from airflow_provider_scriptrunner.hooks._async import ScriptRunnerAsyncHook
from airflow_provider_scriptrunner.hooks._base import DEFAULT_CONN_ID
from airflow_provider_scriptrunner.task import ownership
from airflow_provider_scriptrunner.task.limits import IDLE_TIMEOUT, Deadline, IdleWatch, next_wake
from airflow_provider_scriptrunner.task.outcome import (
    EventKind,
    JobEvent,
    TriggerEnd,
    Verdict,
    job_result,
    judge_job,
)
from airflow_provider_scriptrunner.task.output import StreamFollower, TailBuffer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_scriptrunner.client.models import ScriptRunnerJob

#: Longest pause between polls while the server keeps failing.
MAX_ERROR_BACKOFF = 60.0
#: How long reading the task's state (through the triggerer's supervisor) may take.
STATE_READ_TIMEOUT = 60.0
#: How long a trigger whose task someone else ended (and canceled its job) waits before it fires:
#: time for the triggerer to cancel it. Should its trigger id have been given to another task's
#: deferral meanwhile (SQLite reuses ids), the event then reaches that task long after it deferred:
#: it ignores another try's event, where an event right after its deferral can make Airflow fail it.
STALE_EVENT_GRACE = 30.0


class ScriptRunnerJobTrigger(BaseTrigger):
    """
    Poll a job until it ends, then fire exactly one event.

    The event payload is :meth:`~airflow_provider_scriptrunner.task.outcome.JobEvent.to_dict`:
    ``kind`` is ``ended``, ``timeout`` or ``error``, with a ``message``, the ``job_id``, the last
    ``job`` seen, and the byte offsets up to which the output was logged (``log_offsets``).

    :param job_id: the job to follow.
    :param scriptrunner_conn_id: Airflow connection of type ``scriptrunner``.
    :param poll_interval: seconds between polls.
    :param deadline: the task's deadline (:meth:`Deadline.to_dict`): when it passes the job is
        canceled and a ``timeout`` event fires. None: no deadline.
    :param idle: the idle watch (:meth:`IdleWatch.to_dict`) as the task left it. None: off.
    :param cancel_on_kill: cancel the job when the task leaves DEFERRED on this try (marked
        failed/success by a user, or Airflow ended the deferral). Never while the task is still
        DEFERRED (triggerer restart, rebalance), and never once another try owns the job.
    :param cancel_on_timeout: cancel the job when the deadline passes (a sensor sets False: it
        only watches).
    :param stream_logs: follow the job's stdout and stderr into the trigger's log (shown in the
        task's log while it is deferred), line by line as ``[stdout] ...`` / ``[stderr] ...``.
    :param log_offsets: byte offsets of stdout and stderr to follow from (what is before them is
        in the task log already).
    :param log_page_bytes: bytes per log request.
    :param max_consecutive_errors: transient HTTP failures in a row before giving up with an
        ``error`` event; between them the trigger backs off exponentially.
    :param end_task: :meth:`TriggerEnd.to_dict`: when the job succeeds (or is skipped), end the
        task here, with the return value a worker would push, instead of firing an event for a
        worker (the run operator's ``end_in_triggerer``). Anything else still fires an event.
        None: always fire an event.
    """

    def __init__(
        self,
        job_id: str,
        scriptrunner_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 10.0,
        *,
        deadline: dict[str, Any] | None = None,
        idle: dict[str, Any] | None = None,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        stream_logs: bool = False,
        log_offsets: dict[str, int] | None = None,
        log_page_bytes: int = DEFAULT_LOG_PAGE_BYTES,
        max_consecutive_errors: int = 8,
        end_task: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Checked here, in the task, so that a bad value fails the task clearly instead of
        # crashing the trigger later in the triggerer.
        self.job_id = validation.validate_job_id(job_id)
        self.scriptrunner_conn_id = validation.conn_id(scriptrunner_conn_id)
        self.poll_interval = validation.required_seconds("poll_interval", poll_interval)
        self.deadline = Deadline.from_dict(deadline)
        self.idle = IdleWatch.from_dict(idle)
        self.cancel_on_kill = bool(cancel_on_kill)
        self.cancel_on_timeout = bool(cancel_on_timeout)
        self.stream_logs = bool(stream_logs)
        offsets = dict(log_offsets or {})
        if set(offsets) - set(LOG_STREAMS):
            raise ValueError(
                f"log_offsets must map 'stdout'/'stderr' to byte offsets >= 0, got {log_offsets!r}"
            )
        self.log_offsets = {
            s: validation.offset(f"log_offsets[{s!r}]", offsets.get(s, 0)) for s in LOG_STREAMS
        }
        self.log_page_bytes = page_size_check("log_page_bytes", log_page_bytes)
        self.max_consecutive_errors = validation.integer(
            "max_consecutive_errors", max_consecutive_errors, minimum=1
        )
        self.end_task = TriggerEnd.from_dict(end_task)
        # Ending the task here needs the whole output, for the return value's tail.
        if self.end_task is not None and any(self.log_offsets.values()):
            raise ValueError("end_task needs the output from its start: log_offsets must be 0")
        self._hook: ScriptRunnerAsyncHook | None = None
        cap = None if self.end_task is None else self.end_task.max_output_bytes
        self._followers = {
            s: StreamFollower(
                s,
                self.log,
                self.log_page_bytes,
                self.log_offsets[s],
                tail=None if cap is None else TailBuffer(cap),
            )
            for s in LOG_STREAMS
        }
        self._kill_decision: asyncio.Future[None] | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "scriptrunner_conn_id": self.scriptrunner_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": None if self.deadline is None else self.deadline.to_dict(),
                "idle": self.idle.to_dict() if self.idle.idle_timeout is not None else None,
                "cancel_on_kill": self.cancel_on_kill,
                "cancel_on_timeout": self.cancel_on_timeout,
                "stream_logs": self.stream_logs,
                # The offsets it was deferred with: a re-created trigger (triggerer restart) starts
                # again from there, so lines logged since may appear twice.
                "log_offsets": dict(self.log_offsets),
                "log_page_bytes": self.log_page_bytes,
                "max_consecutive_errors": self.max_consecutive_errors,
                "end_task": None if self.end_task is None else self.end_task.to_dict(),
            },
        )

    @property
    def hook(self) -> ScriptRunnerAsyncHook:
        # The trigger's own backoff handles transient errors, so the hook does not retry as well.
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
        yield event if isinstance(event, TriggerEvent) else TriggerEvent(event.to_dict())

    # -- following the job -----------------------------------------------------------------------

    async def _follow(self) -> JobEvent | TriggerEvent:
        errors = 0
        job: ScriptRunnerJob | None = None
        while True:
            if self.deadline is not None and self.deadline.passed(time.time()):
                return await self._time_out(job)
            try:
                job = await self.hook.get_job(self.job_id)
                if self.stream_logs:
                    for follower in self._followers.values():
                        await follower.acatch_up(self.hook, job)
                errors = 0
            except ScriptRunnerJobNotFoundError as err:
                message = f"job {self.job_id} is unknown to the server (JOB_NOT_FOUND): {err.message}"
                return self._event(EventKind.ERROR, message, job, error_code=err.error_code)
            except ScriptRunnerError as err:
                if not api.is_transient(err, api.JOB):
                    # Rejected credentials, a wrong URL, a bad connection: waiting will not help.
                    message = f"cannot follow job {self.job_id}: {err}"
                    return self._event(
                        EventKind.ERROR, message, job, error_code=getattr(err, "error_code", None)
                    )
                errors += 1
                if errors >= self.max_consecutive_errors:
                    message = (
                        f"gave up following job {self.job_id} after {errors} failed polls in a row: {err}"
                    )
                    return self._event(EventKind.ERROR, message, job)
                delay = min(self.poll_interval * 2 ** (errors - 1), MAX_ERROR_BACKOFF)
                self.log.warning(
                    "Polling job %s failed (%d in a row); next try in %.1f s: %s",
                    self.job_id,
                    errors,
                    delay,
                    err,
                )
                await asyncio.sleep(next_wake(time.time(), delay, self._deadline_at()))
                continue
            if job.is_terminal:
                if job.status is JobStatus.CANCELED and await self._task_left_deferred():
                    self.log.info(
                        "Job %s was canceled and the task is no longer deferred: waiting %g s to be stopped",
                        self.job_id,
                        STALE_EVENT_GRACE,
                    )
                    await asyncio.sleep(STALE_EVENT_GRACE)
                elif self.end_task is not None:
                    ended = await self._end_task(job, self.end_task)
                    if ended is not None:
                        return ended
                return self._event(EventKind.ENDED, judge_job(job).message, job)
            seen = self.idle.observe(job, time.time())
            if seen == "disabled":
                self.log.warning(self.idle.disabled_message(self.job_id))
            elif seen == "stalled":
                canceled = await self._cancel_job(f"it wrote no output for {self.idle.idle_timeout:g} s")
                return self._event(
                    EventKind.TIMEOUT,
                    self.idle.stall_message(self.job_id),
                    canceled or job,
                    limit=IDLE_TIMEOUT,
                    canceled=canceled is not None,
                )
            await asyncio.sleep(
                next_wake(time.time(), self.poll_interval, self._deadline_at(), self.idle.due())
            )

    async def _end_task(self, job: ScriptRunnerJob, end: TriggerEnd) -> TriggerEvent | None:
        """
        End the task here when the job succeeded (or is skipped) and this try still owns it: log
        the rest of the output, push the return value, clear the job record. None: a worker ends
        the task (a failure, a skip with a callback, another try's job, or a step that failed).
        """
        for follower in self._followers.values():
            await follower.acatch_up(self.hook, job)
            follower.finish(job)
        stdout, stderr = self._followers["stdout"].result(), self._followers["stderr"].result()
        outcome = judge_job(job, end.skip_on_exit_code, stderr=stderr[0])
        if outcome.verdict is Verdict.FAIL or (outcome.verdict is Verdict.SKIP and not end.skip):
            return None
        why_not = await self._why_not_own_task()
        if why_not:
            self.log.info("Job %s ended; a worker ends the task, because %s", self.job_id, why_not)
            return None
        ti = self.task_instance
        try:
            if outcome.verdict is Verdict.SUCCESS and end.push_result:
                await ownership.push_result(
                    ti, job_result(job, stdout, stderr), multiple_outputs=end.multiple_outputs
                )
            await ownership.clear_record(ti, self.log)
        except Exception as err:  # noqa: BLE001 - the worker path does it all again
            self.log.warning("Could not end the task in the triggerer (%s); a worker ends it", err)
            return None
        if outcome.verdict is Verdict.SKIP:
            self.log.info("%s; the task ends here, in the triggerer", outcome.message)
            return TaskSkippedEvent()
        self.log.info("%s in %s ms; the task ends here, in the triggerer", outcome.message, job.duration_ms)
        return TaskSuccessEvent()

    async def _why_not_own_task(self) -> str | None:
        """Why this trigger may not end its task: it is not DEFERRED on this try with this job."""
        if self.task_instance is None:
            return "the trigger has no task instance"
        try:
            state = await asyncio.wait_for(self._task_state(), STATE_READ_TIMEOUT)
            owner = await asyncio.wait_for(self._owner(), STATE_READ_TIMEOUT)
        except Exception as err:  # noqa: BLE001 - in doubt, the worker decides
            return f"the task's state could not be read ({type(err).__name__}: {err})"
        if state != "deferred":
            return f"the task is {state}, not deferred"
        own = ownership.Owner(self.task_instance.try_number, self.job_id)
        if owner != own:
            return f"the job's owner is {owner}, not this try ({own})"
        return None

    async def _task_left_deferred(self) -> bool:
        """Whether this trigger's task is known to be no longer DEFERRED (someone ended it)."""
        if self.task_instance is None:
            return False
        try:
            state = await asyncio.wait_for(self._task_state(), STATE_READ_TIMEOUT)
        except Exception:  # noqa: BLE001 - in doubt, fire as usual
            return False
        return state != "deferred"

    def _deadline_at(self) -> float | None:
        return None if self.deadline is None else self.deadline.at

    def _event(self, kind: EventKind, message: str, job: ScriptRunnerJob | None, **fields: Any) -> JobEvent:
        return JobEvent(
            kind,
            message,
            self.job_id,
            job,
            log_offsets={s: f.logged_offset for s, f in self._followers.items()},
            truncation_warned=tuple(s for s, f in self._followers.items() if f.truncation_warned),
            task=ownership.try_key(self.task_instance),
            **fields,
        )

    async def _time_out(self, job: ScriptRunnerJob | None) -> JobEvent:
        assert self.deadline is not None
        message = f"job {self.job_id} did not finish within {self.deadline.describe()}"
        if not self.cancel_on_timeout:
            return self._event(EventKind.TIMEOUT, message, job, limit=self.deadline.limit)
        canceled = await self._cancel_job(f"{self.deadline.describe()} passed")
        outcome = "it was canceled" if canceled else "canceling it failed (see the log above)"
        return self._event(
            EventKind.TIMEOUT,
            f"{message}; {outcome}",
            canceled or job,
            limit=self.deadline.limit,
            canceled=canceled is not None,
        )

    async def _cancel_job(self, why: str) -> ScriptRunnerJob | None:
        try:
            job = await self.hook.cancel_job(self.job_id)
        except ScriptRunnerError as err:
            self.log.error("Could not cancel job %s (%s): %s", self.job_id, why, err)
            return None
        self.log.info("Canceled job %s because %s (status now %s)", self.job_id, why, job.status.value)
        return job

    # -- stopped: cancel the job or leave it -----------------------------------------------------

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
            verdict = await self.cancel_verdict()
            if verdict.cancel:
                await self._cancel_job(verdict.why)
            else:
                self.log.info("Not canceling job %s: %s", self.job_id, verdict.why)
        finally:
            await self.cleanup()  # it may outlive the triggerer's own call of cleanup()

    async def cancel_verdict(self) -> ownership.CancelVerdict:
        """Read what :func:`~airflow_provider_scriptrunner.task.ownership.cancel_verdict` needs, and ask it."""
        try:
            state = await asyncio.wait_for(self._task_state(), STATE_READ_TIMEOUT)
        except Exception as err:  # noqa: BLE001 - any doubt means: leave the job alone
            return ownership.CancelVerdict(
                False, f"could not read the task's state ({type(err).__name__}: {err})"
            )
        own_try = getattr(self.task_instance, "try_number", None)
        try:
            owner = await asyncio.wait_for(self._owner(), STATE_READ_TIMEOUT)
        except Exception as err:  # noqa: BLE001 - the state decides alone
            self.log.warning(
                "Could not read which try owns job %s (%s); deciding by the task's state", self.job_id, err
            )
            owner = None if own_try is None else ownership.Owner(own_try, self.job_id)
        return ownership.cancel_verdict(
            cancel_on_kill=self.cancel_on_kill,
            state=state,
            own_try=own_try,
            own_job=self.job_id,
            owner=owner,
            deadline_passed=self.deadline is not None and self.deadline.passed(time.time()),
            deadline=self.deadline.describe() if self.deadline else "the deadline",
        )

    async def _task_state(self) -> str | None:
        return await ownership.read_task_state(self.task_instance)

    async def _owner(self) -> ownership.Owner | None:
        return await ownership.read_owner(self.task_instance)

    async def cleanup(self) -> None:
        if self._hook is not None:
            await self._hook.close()
