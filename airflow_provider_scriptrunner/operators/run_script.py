"""The run-script operator: run a script and wait for its result, in the worker or the triggerer."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR

from airflow_provider_scriptrunner._compat import AirflowSkipException, default_deferrable, other_listeners
from airflow_provider_scriptrunner.client import validation
from airflow_provider_scriptrunner.client.errors import (
    ScriptRunnerError,
    ScriptRunnerJobError,
    ScriptRunnerJobNotFoundError,
    ScriptRunnerOutputError,
)
from airflow_provider_scriptrunner.client.models import LOG_STREAMS, ScriptRunnerJob
from airflow_provider_scriptrunner.client.paging import DEFAULT_LOG_PAGE_BYTES, page_size_check
from airflow_provider_scriptrunner.hooks._base import DEFAULT_CONN_ID
from airflow_provider_scriptrunner.operators import _lineage as lineage
from airflow_provider_scriptrunner.operators._base import (
    DEFAULT_MAX_OUTPUT_BYTES,
    XCOM_JOB_ID,
    ScriptRunnerOperatorBase,
    without_retries_when_futile,
)
from airflow_provider_scriptrunner.task import ownership
from airflow_provider_scriptrunner.task.limits import (
    IDLE_TIMEOUT,
    Deadline,
    IdleWatch,
    next_wake,
    task_deadline,
)
from airflow_provider_scriptrunner.task.outcome import (
    EventKind,
    JobEvent,
    TriggerEnd,
    Verdict,
    job_result,
    judge_job,
)
from airflow_provider_scriptrunner.task.output import StreamFollower, TailBuffer
from airflow_provider_scriptrunner.task.ownership import JobRecord
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from airflow.sdk import Context

#: Worker-mode polling starts fast (a quick script is seen at once) and slows down to poll_interval:
#: a poll after 2 ms, then pauses growing by half, so a script that ends a few ms after submit is
#: seen within a poll's round trip of its end while a long job takes few polls (benchmarks/RESULTS.md).
FIRST_POLL_DELAY = 0.002
POLL_GROWTH = 1.5
#: Airflow's own deferral timeout comes this long after the task's deadline: a backstop for a
#: triggerer that is down when the deadline passes (the trigger fires at the deadline itself).
DEFER_TIMEOUT_GRACE = 60.0
#: How long a new try with reattach=False waits for the previous try's job to stop.
PREVIOUS_JOB_STOP_WAIT = 60.0


class ScriptRunnerRunScriptOperator(ScriptRunnerOperatorBase):
    """
    Run a script on script-runner and wait for its result.

    The script is submitted in async mode, so the task always holds the job id: the job can be
    canceled, its logs streamed, and a long script outlives any HTTP timeout. The task then
    waits in the worker, or in the triggerer with ``deferrable=True``; in both the script's
    output appears in the task log while it runs, and every limit cancels the job.

    Outcomes (decided in :mod:`airflow_provider_scriptrunner.task.outcome`): ``succeeded`` succeeds;
    an exit code in ``skip_on_exit_code`` skips; a non-zero exit fails with the code and the end
    of stderr; ``timed_out`` fails (the server's script timeout fired); ``canceled`` fails;
    ``failed`` with code -1 fails (killed by a signal, or lost in a server restart).

    :param script_id: id of a script in the server's whitelist (templated).
    :param args: list of string arguments; numbers are converted with ``str()`` (templated).
    :param scriptrunner_conn_id: Airflow connection of type ``scriptrunner`` (templated).
    :param deferrable: wait in the triggerer instead of the worker. Default: ``[operators]
        default_deferrable``.
    :param poll_interval: longest pause between status checks, in seconds. In the worker the
        first check comes after 2 ms and the pause grows by half up to this value.
    :param timeout: seconds (or a timedelta) the try may take, counted from its start, before
        the job is canceled and the task fails. The task's ``execution_timeout`` does the same;
        the earlier of the two applies, in the worker and while deferred. None: no limit of its
        own (the server's ``timeoutSec`` may still apply).
    :param idle_timeout: seconds a RUNNING job may go without writing to stdout or stderr before
        it is canceled and the task fails ("no output for N s"). Queued time does not count.
        None (default): off.
    :param skip_on_exit_code: exit code(s) that skip the task instead (as BashOperator).
    :param cancel_on_kill: cancel the job when the task is killed (marked failed/success,
        ``execution_timeout``, SIGTERM), in the worker and while deferred.
    :param reattach: a new try (retry or clear) reattaches to the previous try's job while it
        is still queued or running, instead of starting the script again. With False the new
        try cancels that job first, so two copies never run at once.
    :param max_output_bytes: bytes of stdout and of stderr kept in the return value (the end
        of each stream). All of the output goes to the task log regardless.
    :param stream_logs: copy the script's stdout and stderr into the task log while it runs (in
        the worker, and from the triggerer while deferred). False: the output is written once
        the job has ended.
    :param log_page_bytes: bytes fetched per log request.
    :param output_processor: a callable applied to the script's stdout when the job succeeded
        (the text kept in the return value: all of it, or its last ``max_output_bytes`` when
        longer); what it returns is the return value's ``result``, e.g. ``json.loads`` for a
        script that prints one JSON document. When it raises, the task fails with its error
        and the job id, and a retry processes the same job's output again instead of running
        the script again.
    :param end_in_triggerer: with ``deferrable=True``, let the trigger end the task itself when the
        job succeeds (or is skipped by ``skip_on_exit_code``), so no worker runs again after the
        job: the return value, the output in the log and the job record are the same. Airflow runs
        no worker-side code for such an end, so a task that needs it ends in the worker as usual:
        one with ``output_processor``, ``outlets``, ``on_success_callback``, a mapped downstream
        task or a listener plugin (OpenLineage) besides this provider's, and a skip when it has an
        ``on_skipped_callback``. Failures always end in the worker (retries, callbacks, the message).
        Default False.
    """

    template_fields: Sequence[str] = ("script_id", "args", "scriptrunner_conn_id")
    #: A deferred task gets its args back when it resumes (those a decorated function computed
    #: exist nowhere else); the classic operator renders them again instead.
    resume_with_args: ClassVar[bool] = False
    template_fields_renderers: ClassVar[dict[str, str]] = {"args": "json"}
    ui_color = "#e8f4e8"

    def __init__(
        self,
        *,
        script_id: str,
        args: Sequence[Any] | str | None = None,
        scriptrunner_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        poll_interval: float = 10.0,
        timeout: float | timedelta | None = None,
        idle_timeout: float | timedelta | None = None,
        skip_on_exit_code: int | Iterable[int] | None = None,
        cancel_on_kill: bool = True,
        reattach: bool = True,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        stream_logs: bool = True,
        log_page_bytes: int = DEFAULT_LOG_PAGE_BYTES,
        output_processor: Callable[[str], Any] | None = None,
        end_in_triggerer: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(scriptrunner_conn_id=scriptrunner_conn_id, **kwargs)
        if output_processor is not None and not callable(output_processor):
            raise TypeError(
                f"output_processor must be a callable that takes the script's stdout (e.g. json.loads), "
                f"got {type(output_processor).__name__}: {output_processor!r:.80}"
            )
        self.script_id = script_id
        self.args = args
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.poll_interval = validation.required_seconds("poll_interval", poll_interval)
        self.timeout = validation.positive_seconds("timeout", timeout)
        self.idle_timeout = validation.positive_seconds("idle_timeout", idle_timeout)
        self.skip_on_exit_code = validation.skip_codes(skip_on_exit_code)
        self.cancel_on_kill = cancel_on_kill
        self.reattach = reattach
        self.max_output_bytes = validation.byte_count("max_output_bytes", max_output_bytes)
        self.stream_logs = stream_logs
        self.log_page_bytes = page_size_check("log_page_bytes", log_page_bytes)
        self.output_processor = output_processor
        self.end_in_triggerer = end_in_triggerer
        self.job_id: str | None = None
        #: The last state of the job seen (for the lineage facets).
        self.job: ScriptRunnerJob | None = None
        self._killed_during_submit = False
        self._canceled_job: str | None = None

    # -- execute ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any] | None:
        with without_retries_when_futile():
            script_id = validation.validate_script_id(self.script_id)
            args = validation.validate_args(self.args)
        deadline = self._deadline(context)
        record = JobRecord.of(context, self.log)
        job = self._previous_job(record, retrying=ownership.is_retry(context.get("ti"), self.retries))
        if job is None:
            with without_retries_when_futile():
                job_id = self.job_id = self.hook.submit_script(script_id, args)
            self.log.info("Submitted script %r with args %s as job %s", script_id, args, job_id)
            record.set(job_id)
            if self._killed_during_submit:
                self._cancel_quietly("the task was killed while the script was being submitted", retries=1)
        else:
            job_id = self.job_id = job.job_id
        self._publish_job(context, job_id)
        if job is not None and job.is_terminal:  # an earlier try's job that succeeded
            return self._finish(context, record, job, self._followers())
        if self.deferrable:
            return self._defer_unless_ended(context, record, job or self.hook.get_job(job_id), deadline)
        return self._wait_in_worker(context, record, job_id, deadline, IdleWatch(self.idle_timeout))

    def _defer_unless_ended(
        self, context: Context, record: JobRecord, job: ScriptRunnerJob, deadline: Deadline | None
    ) -> dict[str, Any] | None:
        """Follow ``job`` from the triggerer; a job that has already ended is finished here instead."""
        if job.is_terminal:
            self.log.info("Job %s already finished (%s); not deferring", job.job_id, job.status.value)
            return self._finish(context, record, job, self._followers())
        watch = IdleWatch(self.idle_timeout)
        watch.observe(job, time.time())
        self._defer(context, job.job_id, deadline, watch)
        raise AssertionError("unreachable")  # pragma: no cover - defer() raises

    def _deadline(self, context: Context) -> Deadline | None:
        """The earliest of ``timeout`` and ``execution_timeout``, from the try's start."""
        start = getattr(context.get("ti"), "start_date", None)
        return task_deadline(
            start if isinstance(start, datetime) else None, self.timeout, self.execution_timeout, time.time()
        )

    def _defer(self, context: Context, job_id: str, deadline: Deadline | None, watch: IdleWatch) -> None:
        ownership.record_owner(context["ti"], job_id)
        self.defer(
            trigger=ScriptRunnerJobTrigger(
                job_id=job_id,
                scriptrunner_conn_id=self.scriptrunner_conn_id,
                poll_interval=self.poll_interval,
                deadline=None if deadline is None else deadline.to_dict(),
                idle=None if self.idle_timeout is None else watch.to_dict(),
                cancel_on_kill=self.cancel_on_kill,
                stream_logs=self.stream_logs,
                log_page_bytes=self.log_page_bytes,
                end_task=self._trigger_end(),
            ),
            method_name="execute_complete",
            kwargs={"args": self.args} if self.resume_with_args else None,
            # A backstop only: the trigger fires at the deadline itself. Should the triggerer be
            # down then, Airflow ends the deferral a little later, and resume_execution cancels.
            timeout=None
            if deadline is None
            else timedelta(seconds=max(0.0, deadline.at - time.time()) + DEFER_TIMEOUT_GRACE),
        )

    def _trigger_end(self) -> dict[str, Any] | None:
        """What the trigger needs to end this task itself (``end_in_triggerer``); None: a worker ends it."""
        if not self.end_in_triggerer:
            return None
        needs_worker = self._needs_worker_to_end()
        if needs_worker:
            self.log.info("end_in_triggerer: this task ends in a worker after all, because %s", needs_worker)
            return None
        return TriggerEnd(
            skip_on_exit_code=tuple(sorted(self.skip_on_exit_code)),
            max_output_bytes=self.max_output_bytes,
            push_result=self.do_xcom_push,
            multiple_outputs=bool(self.multiple_outputs),
            skip=not self.on_skipped_callback,
        ).to_dict()

    def _needs_worker_to_end(self) -> str | None:
        """Why a successful end needs worker-side code that a trigger-side end skips; None: it does not."""
        if self.output_processor is not None:
            return "output_processor runs in the worker"
        if self.outlets:
            return "only a worker records asset events for outlets"
        if self.on_success_callback:
            return "on_success_callback runs only in a worker"
        if self.has_dag() and any(True for _ in self.iter_mapped_dependants()):
            return "a mapped downstream task needs the length a worker records"
        listeners = other_listeners()
        if listeners:
            return f"listener plugins ({', '.join(listeners)}) hear only of tasks that end in a worker"
        return None

    def execute_complete(
        self, context: Context, event: dict[str, Any], args: Sequence[Any] | None = None
    ) -> dict[str, Any] | None:
        """Resume after the trigger fired; ``args``: those the job was started with (for the rendered fields)."""
        if args is not None:
            self.args = args
        result = JobEvent.from_dict(event)
        if not ownership.same_try(context["ti"], result.task):
            return self._follow_own_job(context, result)
        self.job_id = result.job_id
        self._link_job(result.job_id)
        record = JobRecord.of(context, self.log)
        if result.kind is not EventKind.ENDED:
            why = (
                "the job could not be followed"
                if result.kind is EventKind.ERROR
                else f"{result.limit} passed"
            )
            self._canceled_job = self.job_id if result.canceled else None  # the trigger did it
            self.job = result.job
            if self._cancel_quietly(why):
                record.clear()
            raise ScriptRunnerJobError(result.message, result.job)
        followers = self._followers(result.log_offsets, result.truncation_warned)
        for follower in followers.values():
            follower.prime(self.hook, result.job_id)  # the end of what the trigger logged, for the result
        return self._finish(context, record, self.hook.get_job(result.job_id), followers)

    def _recorded_job_id(self, context: Context, record: JobRecord) -> str | None:
        """This try's job: from the record, or from the XCom pushed when it was submitted."""
        job_id = record.get() or context["ti"].xcom_pull(task_ids=self.task_id, key=XCOM_JOB_ID)
        return job_id if isinstance(job_id, str) and job_id else None

    def _follow_own_job(self, context: Context, stray: JobEvent) -> dict[str, Any] | None:
        """
        The event of another try's trigger reached this try (on SQLite, a new deferral can get the
        id of a trigger row that was just deleted while its trigger still ran): ignore it and follow
        this try's own job, as the trigger it never got would have.
        """
        record = JobRecord.of(context, self.log)
        job_id = self._recorded_job_id(context, record)
        self.log.warning(
            "Ignoring the event of another try's trigger (%s, job %s): this is try %s; following its job %s",
            stray.task,
            stray.job_id,
            context["ti"].try_number,
            job_id,
        )
        if job_id is None:
            raise ScriptRunnerJobError(
                f"this try's job is not known (the event received was job {stray.job_id}'s)"
            )
        self.job_id = job_id
        self._link_job(job_id)
        return self._defer_unless_ended(context, record, self.hook.get_job(job_id), self._deadline(context))

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Airflow ended the deferral itself (trigger timeout or failure): cancel the job, then fail."""
        if next_method == TRIGGER_FAIL_REPR and self.cancel_on_kill:
            self.job_id = self._recorded_job_id(context, JobRecord.of(context, self.log))
            if self.job_id:
                try:
                    live = not self.hook.get_job(self.job_id).is_terminal
                except ScriptRunnerError as err:
                    self.log.warning("Could not read job %s after the deferral ended: %s", self.job_id, err)
                    live = True
                if live:
                    self._cancel_quietly(
                        "Airflow ended the deferral (its trigger timed out or failed)", retries=1
                    )
        return super().resume_execution(next_method, next_kwargs, context)

    def _wait_in_worker(
        self, context: Context, record: JobRecord, job_id: str, deadline: Deadline | None, watch: IdleWatch
    ) -> dict[str, Any] | None:
        followers = self._followers()
        delay = FIRST_POLL_DELAY
        while True:
            time.sleep(next_wake(time.time(), delay, None if deadline is None else deadline.at, watch.due()))
            job = self.job = self.hook.get_job(job_id)
            if job.is_terminal:
                return self._finish(context, record, job, followers)
            if self.stream_logs:
                for follower in followers.values():
                    follower.catch_up(self.hook, job)
            now = time.time()
            if deadline is not None and deadline.passed(now):
                message = f"job {job_id} did not finish within {deadline.describe()}"
                self._fail_running(record, message, deadline.limit, job)
            seen = watch.observe(job, now)
            if seen == "disabled":
                self.log.warning(watch.disabled_message(job_id))
            elif seen == "stalled":
                self._fail_running(record, watch.stall_message(job_id), IDLE_TIMEOUT, job)
            delay = min(delay * POLL_GROWTH, self.poll_interval)

    def _fail_running(self, record: JobRecord, message: str, limit: str, job: ScriptRunnerJob) -> NoReturn:
        """A limit passed in the worker: cancel the job and fail the try."""
        if self._cancel_quietly(f"{limit} passed"):
            record.clear()
            if "canceled" not in message:
                message += "; it was canceled"
        else:
            message += "; canceling it failed (see the log above), the next try reattaches to it"
        raise ScriptRunnerJobError(message, job)

    def _followers(
        self, offsets: dict[str, int] | None = None, warned: Iterable[str] = ()
    ) -> dict[str, StreamFollower]:
        offsets = offsets or {}
        return {
            s: StreamFollower(
                s,
                self.log,
                self.log_page_bytes,
                offsets.get(s, 0),
                tail=TailBuffer(self.max_output_bytes),
                truncation_warned=s in warned,
            )
            for s in LOG_STREAMS
        }

    def _finish(
        self, context: Context, record: JobRecord, job: ScriptRunnerJob, followers: dict[str, StreamFollower]
    ) -> dict[str, Any] | None:
        """Shared by the worker and deferred paths: final logs, result, and the outcome."""
        self.job = job
        for follower in followers.values():
            follower.catch_up(self.hook, job)
            follower.finish(job)
        stdout, stdout_truncated = followers["stdout"].result()
        outcome = judge_job(job, self.skip_on_exit_code, stderr=followers["stderr"].result()[0])
        if outcome.verdict is not Verdict.SUCCESS:
            record.clear()
            if outcome.verdict is Verdict.SKIP:
                raise AirflowSkipException(outcome.message)
            raise ScriptRunnerJobError(outcome.message, job)
        self.log.info("%s in %s ms", outcome.message, job.duration_ms)
        processed = self._process_output(job, stdout, stdout_truncated)
        record.clear()  # after the processor: a retry after it raised takes this job's output again
        lineage.annotate_asset_events(context, self.outlets, job, self.log)
        return job_result(job, followers["stdout"].result(), followers["stderr"].result(), processed)

    def _process_output(self, job: ScriptRunnerJob, stdout: str, truncated: bool) -> Any:
        """``output_processor(stdout)``, or None without one; its error fails the task, naming the job."""
        if self.output_processor is None:
            return None
        try:
            return self.output_processor(stdout)
        except Exception as err:
            cut = (
                f"; stdout was longer than max_output_bytes ({self.max_output_bytes}), so the processor got "
                "only its end: raise max_output_bytes to process all of it"
                if truncated
                else ""
            )
            raise ScriptRunnerOutputError(
                f"output_processor failed on the stdout of job {job.job_id}: {type(err).__name__}: {err}{cut}. "
                "A retry processes the same job's output again without running the script again",
                job,
            ) from err

    # -- OpenLineage (used only when apache-airflow-providers-openlineage is installed) ----------

    def get_openlineage_facets_on_start(self) -> Any:
        return lineage.operator_lineage(self.script_id, None, None)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return lineage.operator_lineage(self.script_id, self.job_url, self.job)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return lineage.operator_lineage(self.script_id, self.job_url, self.job)

    # -- reruns: reattach, or cancel before submitting again -------------------------------------

    def _previous_job(self, record: JobRecord, *, retrying: bool) -> ScriptRunnerJob | None:
        """
        The previous try's job when it is still queued or running and ``reattach`` is on, or when
        it succeeded and this try is a retry (the earlier try ended between its job's end and its
        own: its result is taken instead of running the script again); else None (submit anew).
        With ``reattach=False`` a live job is canceled first, and the try fails rather than start
        a second copy while the first will not stop.
        """
        previous = record.get()
        if not previous:
            return None
        try:
            job = self.hook.get_job(previous)
        except ScriptRunnerJobNotFoundError:
            self.log.info("Previous job %s is unknown to the server; starting a new job", previous)
            return None
        if job.is_success and retrying:
            self.log.info(
                "Job %s of an earlier try already succeeded, but that try did not finish: taking its "
                "result instead of running the script again",
                previous,
            )
            self.job_id = previous
            return job
        if job.is_terminal:
            self.log.info(
                "Previous job %s already ended (%s); starting a new job", previous, job.status.value
            )
            return None
        if self.reattach:
            self.log.info("Reattaching to job %s from an earlier try (still %s)", previous, job.status.value)
            self.job_id = previous
            return job
        self.log.info(
            "Job %s of an earlier try is still %s and reattach=False: canceling it first",
            previous,
            job.status.value,
        )
        self.hook.cancel_job(previous)
        deadline = time.monotonic() + PREVIOUS_JOB_STOP_WAIT
        while time.monotonic() < deadline:
            time.sleep(0.5)
            job = self.hook.get_job(previous)
            if job.is_terminal:
                return None
        raise ScriptRunnerJobError(
            f"job {previous} of an earlier try is still {job.status.value} {PREVIOUS_JOB_STOP_WAIT:g} s after it was "
            "asked to stop (its script may ignore SIGTERM); not starting a second copy of the script",
            job,
        )

    # -- cancel on kill --------------------------------------------------------------------------

    def on_kill(self) -> None:
        """Cancel the job when the task is killed in the worker (Airflow allows ~5 s)."""
        if self.cancel_on_kill:
            if not self.job_id:
                # Killed while POST /run is in flight: the script may be starting, but its id is not
                # known yet. execute() cancels it as soon as it is.
                self._killed_during_submit = True
            self._cancel_quietly("the task was killed", retries=1)

    def _cancel_quietly(self, why: str, retries: int | None = None) -> bool:
        """Cancel the job once (later calls are no-ops); return whether it is canceled."""
        if not self.job_id:
            return False
        if self._canceled_job == self.job_id:
            return True
        try:
            job = self.hook.clone(retries=retries).cancel_job(self.job_id)
        except ScriptRunnerError as err:
            self.log.error("Could not cancel job %s (%s): %s", self.job_id, why, err)
            return False
        self._canceled_job = self.job_id
        self.log.info("Canceled job %s because %s (status now %s)", self.job_id, why, job.status.value)
        return True
