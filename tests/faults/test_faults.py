"""
Fault injection: the provider against the bundled server behind a fault-injecting proxy.

Every scenario runs a few times and records what held in the session's fault table
(``tests/faults/RESULTS.md``). The connection always carries an API token; the ``leak`` fixture
fails a test when the token shows up in any log line, output or error.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_scriptrunner._compat import AirflowFailException, TaskDeferred
from airflow_provider_scriptrunner.client.errors import (
    ScriptRunnerApiError,
    ScriptRunnerConnectionError,
    ScriptRunnerError,
    ScriptRunnerJobError,
    ScriptRunnerJobNotFoundError,
    ScriptRunnerResponseError,
    ScriptRunnerTimeoutError,
)
from airflow_provider_scriptrunner.client.models import JobStatus
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerAsyncHook, ScriptRunnerHook
from airflow_provider_scriptrunner.operators.scriptrunner import (
    ScriptRunnerCancelJobOperator,
    ScriptRunnerGetJobLogsOperator,
    ScriptRunnerRunScriptOperator,
    ScriptRunnerSubmitScriptOperator,
)
from airflow_provider_scriptrunner.sensors.scriptrunner import ScriptRunnerJobSensor
from airflow_provider_scriptrunner.task.outcome import JobEvent
from airflow_provider_scriptrunner.testing.harness import process_alive, process_group_alive
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger
from tests.faults.conftest import TOKEN, Rig, wait_for
from tests.operators.test_scriptrunner_operators import FakeVariables, make_context

#: Runs per scenario where a run is cheap.
RUNS = 3
JOB_PATH = r"/jobs/[^/]+"
LOGS_PATH = r"/jobs/[^/]+/logs"
CHILD = Path(__file__).with_name("sigterm_task.py")


# ------------------------------------------------------------------------------------------------
# helpers


def run_op(**kwargs: Any) -> ScriptRunnerRunScriptOperator:
    kwargs.setdefault("task_id", "run")
    kwargs.setdefault("deferrable", False)
    kwargs.setdefault("poll_interval", 0.1)
    return ScriptRunnerRunScriptOperator(**kwargs)


@pytest.fixture(autouse=True)
def variables(monkeypatch: pytest.MonkeyPatch) -> FakeVariables:
    """Where the run operator records its job for the task's next try (an Airflow Variable), in memory."""
    return FakeVariables.install(monkeypatch)


_RUN_IDS = itertools.count()


def new_task() -> str:
    """The run id of a task instance of its own: a job record no other run shares."""
    return f"faults__{next(_RUN_IDS)}"


def task_context(run_id: str, **ti: Any) -> dict[str, Any]:
    """A try of the task instance of ``run_id``; its tries share the job record."""
    return make_context(dag_id="faults", run_id=run_id, **ti)


def run_deferred(op: Any, context: dict[str, Any]) -> Any:
    """Drive an operator the way Airflow does: execute; when it defers, run the trigger, then resume."""
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        payload = asyncio.run(first_event(deferred.trigger))
        return getattr(op, deferred.method_name)(context, payload)


async def first_event(trigger: ScriptRunnerJobTrigger) -> dict[str, Any]:
    try:
        async for event in trigger.run():
            return event.payload
    finally:
        await trigger.cleanup()
    raise AssertionError("the trigger ended without an event")


def in_thread(func: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``func`` in a thread; the list gets its result or the exception it raised."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(func(*args))
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def assert_count(rig: Rig, method: str, path: str, expected: int, *, forwarded: bool = False) -> None:
    """The proxy saw exactly ``expected`` such requests (waiting a moment: a busy machine can be slow to count)."""
    wait_for(lambda: rig.proxy.count(method, path, forwarded=forwarded) >= expected, 5)
    time.sleep(0.05)
    assert rig.proxy.count(method, path, forwarded=forwarded) == expected, rig.proxy.events


def settle(rig: Rig, jobs_before: int, expected_new: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Wait until the server's new jobs (exactly ``expected_new`` expected) have all ended; return them."""

    def new_jobs() -> list[dict[str, Any]] | None:
        jobs = rig.server_jobs()[jobs_before:]
        done = len(jobs) >= expected_new and all(j["status"] not in ("queued", "running") for j in jobs)
        return jobs if done else None

    jobs = wait_for(new_jobs, timeout) if expected_new else rig.server_jobs()[jobs_before:]
    time.sleep(0.2)  # a duplicate would show up now
    return rig.server_jobs()[jobs_before:] or jobs


# ------------------------------------------------------------------------------------------------
# server down at submit


def test_server_down_at_submit_is_retried_with_backoff_then_fails_naming_the_url(
    rig, retry_waits, leak, table
):
    rig.proxy.refuse()
    for i in range(RUNS):
        with table.run("server down (connection refused) at submit"):
            retry_waits.records.clear()
            marker = rig.marker(f"down{i}")
            op = run_op(script_id="count", args=[str(marker)])
            with leak.raises(ScriptRunnerConnectionError) as info:
                op.execute(task_context(new_task()))
            err = info.value
            assert type(err) is ScriptRunnerConnectionError and err.may_have_reached_server is False
            assert err.url == f"{rig.url}/run" and f"{rig.url}/run" in str(err)
            assert "connection refused" in err.reason
            # 1 attempt + the connection's 3 retries (tenacity computes a wait after each failed
            # attempt, the last one unslept), with the hook's real, growing backoff between them.
            assert [r.attempt for r in retry_waits.records] == [1, 2, 3, 4]
            sleeps = [r.real_sleep for r in retry_waits.records][:3]
            assert 0 < sleeps[0] < sleeps[1] < sleeps[2], sleeps
            assert all(isinstance(r.error, ScriptRunnerConnectionError) for r in retry_waits.records)
            assert op.job_id is None and rig.runs(marker) == 0

    # The trigger's async hook and the connection test say the same.
    async def poll() -> None:
        async with ScriptRunnerAsyncHook() as hook:
            await hook.get_job("job_1_1")

    with table.run("server down (connection refused) at submit"):
        retry_waits.records.clear()
        with leak.raises(ScriptRunnerConnectionError) as info:
            asyncio.run(poll())
        assert info.value.may_have_reached_server is False and info.value.url == f"{rig.url}/jobs/job_1_1"
        assert [r.attempt for r in retry_waits.records] == [1, 2, 3, 4]
        ok, message = ScriptRunnerHook().test_connection()
        assert ok is False and f"{rig.url}/healthz" in message and "connection refused" in message
        leak.note(message)
    assert rig.proxy.connections == 0 and rig.proxy.count() == 0
    assert rig.server_jobs() == []  # nothing ran on the server


# ------------------------------------------------------------------------------------------------
# reset after POST /run was sent; refused at submit


def _submit(entry: str, marker: Path) -> Any:
    if entry == "run operator (worker)":
        return run_op(script_id="count", args=[str(marker)]).execute(task_context(new_task()))
    if entry == "run operator (deferrable)":
        return run_deferred(
            run_op(script_id="count", args=[str(marker)], deferrable=True), task_context(new_task())
        )
    if entry == "submit operator":
        return ScriptRunnerSubmitScriptOperator(task_id="s", script_id="count", args=[str(marker)]).execute(
            make_context()
        )
    if entry == "hook.run_script (sync)":
        return ScriptRunnerHook().run_script("count", [str(marker)])
    raise AssertionError(entry)


CUT_LABELS = {
    "reset": "POST /run reached the server, then connection reset (RST)",
    "drop": "POST /run reached the server, then connection closed unanswered",
    "truncate": "POST /run reached the server, then answer truncated",
}
SUBMIT_ENTRIES = [
    "run operator (worker)",
    "run operator (deferrable)",
    "submit operator",
    "hook.run_script (sync)",
]


@pytest.mark.parametrize("entry", SUBMIT_ENTRIES)
@pytest.mark.parametrize(
    ("fault", "params"),
    [
        ("reset", {}),  # the server got POST /run; the client gets a RST instead of the answer
        ("drop", {"forward": True}),  # ... or the connection closed without an answer
        ("truncate", {}),  # ... or half of the answer
    ],
)
def test_post_run_cut_after_it_reached_the_server_never_runs_twice(
    rig, retry_waits, leak, table, entry, fault, params
):
    for i in range(RUNS):
        with table.run(CUT_LABELS[fault]) as run:
            marker = rig.marker(f"{fault}{i}")
            jobs_before = len(rig.server_jobs())
            forwarded = rig.proxy.count("POST", "/run", forwarded=True)
            retry_waits.records.clear()
            rig.proxy.inject(fault, method="POST", path="/run", **params)
            with leak.raises(ScriptRunnerConnectionError) as info:
                _submit(entry, marker)
            err = info.value
            assert not isinstance(err, ScriptRunnerTimeoutError)
            assert err.may_have_reached_server is True and err.url == f"{rig.url}/run"
            assert "may have" in str(err) and "not sent again" in str(err), str(err)
            assert retry_waits.records == []  # POST /run is never sent twice
            assert rig.proxy.count("POST", "/run", forwarded=True) - forwarded == 1
            jobs = settle(rig, jobs_before, 1)
            run.duplicates = max(0, len(jobs) - 1) + max(0, rig.runs(marker) - 1)
            run.orphans = rig.orphans(marker)
            run.lost = 1  # it ran, and the task could not learn its job id: the API offers no way
            assert len(jobs) == 1 and jobs[0]["status"] == "succeeded" and rig.runs(marker) == 1
            assert run.orphans == 0


@pytest.mark.parametrize("deferrable", [False, True])
def test_refused_at_submit_is_retried_and_runs_exactly_once(rig, retry_waits, leak, table, deferrable):
    for i in range(RUNS):
        with table.run("connection refused at submit, then back") as run:
            marker = rig.marker(f"refused{i}")
            jobs_before = len(rig.server_jobs())
            forwarded = rig.proxy.count("POST", "/run", forwarded=True)
            retry_waits.records.clear()
            retry_waits.callbacks[:] = [lambda record: record.attempt == 2 and rig.proxy.accept()]
            rig.proxy.refuse()
            result = run_deferred(
                run_op(script_id="count", args=[str(marker)], deferrable=deferrable),
                task_context(new_task()),
            )
            assert result["status"] == "succeeded" and result["stdout"] == "done run 1\n"
            assert [r.attempt for r in retry_waits.records] == [1, 2]
            assert all(
                r.error.may_have_reached_server is False and r.error.url.endswith("/run")
                for r in retry_waits.records
            )
            assert rig.proxy.count("POST", "/run", forwarded=True) - forwarded == 1
            jobs = settle(rig, jobs_before, 1)
            run.duplicates = max(0, len(jobs) - 1) + max(0, rig.runs(marker) - 1)
            assert run.duplicates == 0 and rig.runs(marker) == 1


# ------------------------------------------------------------------------------------------------
# 5xx/429 bursts and dropped connections while polling


#: Faults for GET /jobs/{id}, in order: bursts of at most 3 in a row (within the hook's 3
#: retries), separated by good answers.
POLL_FAULTS = [
    ("status", {"code": 503}),
    ("status", {"code": 429, "headers": {"Retry-After": "0"}}),
    ("html", {"code": 502}),
    ("pass", {}),
    ("drop", {}),
    ("status", {"code": 504}),
    ("reset", {}),
    ("pass", {}),
    ("truncate", {}),
    ("drop", {"forward": True}),
]
LOG_FAULTS = [("status", {"code": 503}), ("drop", {}), ("truncate", {})]


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_bursts_and_drops_while_polling_still_give_the_right_result(rig, leak, table, deferrable):
    for i in range(RUNS):
        with table.run(
            f"5xx/429 bursts + dropped connections while polling ({'deferrable' if deferrable else 'worker'})"
        ) as run:
            marker = rig.marker(f"burst{i}")
            forwarded = rig.proxy.count("POST", "/run", forwarded=True)
            for kind, params in POLL_FAULTS:
                rig.proxy.inject(kind, method="GET", path=JOB_PATH, **params)
            for kind, params in LOG_FAULTS:
                rig.proxy.inject(kind, method="GET", path=LOGS_PATH, **params)
            op = run_op(
                script_id="chatty_count", args=[str(marker), "1.5"], deferrable=deferrable, poll_interval=0.05
            )
            result = run_deferred(op, task_context(new_task()))
            assert (result["status"], result["exit_code"], result["stdout"]) == (
                "succeeded",
                0,
                "started\ndone run 1\n",
            )
            assert rig.proxy.pending() == 0, rig.proxy.events  # every fault was served
            run.duplicates = rig.proxy.count("POST", "/run", forwarded=True) - forwarded - 1
            assert run.duplicates == 0 and rig.runs(marker) == 1


def test_trigger_rides_out_transient_bursts_and_stops_at_once_on_a_500(rig, leak, table):
    hook = ScriptRunnerHook()
    for i in range(RUNS):
        with table.run("5xx/429 bursts + dropped connections while polling (trigger alone)"):
            marker = rig.marker(f"trigger{i}")
            job_id = hook.submit_script("count", [str(marker), "0.5"])
            burst = [
                ("status", {"code": 503}),
                ("status", {"code": 429, "headers": {"Retry-After": "1"}}),
                ("drop", {}),
                ("html", {"code": 504}),
                ("truncate", {}),
                ("reset", {}),
                ("html", {"code": 502}),
            ]
            for kind, params in burst:  # 7 in a row: one less than max_consecutive_errors
                rig.proxy.inject(kind, method="GET", path=JOB_PATH, **params)
            deadline = {"at": time.time() + 60, "limit": "timeout", "seconds": 60.0}
            trigger = ScriptRunnerJobTrigger(job_id=job_id, poll_interval=0.01, deadline=deadline)
            event = JobEvent.from_dict(asyncio.run(first_event(trigger)))
            assert event.kind == "ended", event.message
            assert event.job.status is JobStatus.SUCCEEDED and event.job.exit_code == 0
            assert event.job.stdout_preview == "done run 1\n"
            assert rig.proxy.pending() == 0

    with table.run("5xx/429 bursts + dropped connections while polling (trigger alone)"):
        # A burst longer than max_consecutive_errors ends in one clear error event.
        job_id = hook.submit_script("count", [str(rig.marker("trigger-giveup")), "0.5"])
        rig.proxy.inject("status", method="GET", path=JOB_PATH, times=3, code=503)
        trigger = ScriptRunnerJobTrigger(job_id=job_id, poll_interval=0.01, max_consecutive_errors=3)
        event = JobEvent.from_dict(asyncio.run(first_event(trigger)))
        assert (
            event.kind == "error"
            and "after 3 failed polls in a row" in event.message
            and "503" in event.message
        )
        leak.note(event.message)

    with table.run("500 INTERNAL_ERROR while polling (not transient: one clear error, as in the worker)"):
        # The server's own 500 is not retried by the hook, so the trigger does not wait it out either.
        job_id = hook.submit_script("count", [str(rig.marker("trigger-500")), "0.5"])
        error = {"ok": False, "error": {"code": "INTERNAL_ERROR", "message": "boom"}}
        rule = rig.proxy.inject(
            "status", method="GET", path=f"/jobs/{job_id}", times=5, code=500, body=json.dumps(error)
        )
        event = JobEvent.from_dict(
            asyncio.run(first_event(ScriptRunnerJobTrigger(job_id=job_id, poll_interval=0.01)))
        )
        assert (event.kind, event.error_code, rule.fired) == ("error", "INTERNAL_ERROR", 1)
        assert "500 INTERNAL_ERROR" in event.message and "boom" in event.message
        rule.times = rule.fired
        leak.note(event.message)

    with table.run("500 INTERNAL_ERROR while polling (not transient: one clear error, as in the worker)"):
        # The worker path fails the same way; the task's next try reattaches to the job (its record).
        marker, task = rig.marker("worker-500"), new_task()
        rig.proxy.inject("status", method="GET", path=JOB_PATH, code=500, body=json.dumps(error))
        with leak.raises(ScriptRunnerApiError) as info:
            run_op(script_id="count", args=[str(marker), "0.5"], retries=1).execute(
                task_context(task, max_tries=1)
            )
        assert (type(info.value), info.value.status_code, info.value.error_code) == (
            ScriptRunnerApiError,
            500,
            "INTERNAL_ERROR",
        )
        # Its retry follows the job, or takes its result should it have succeeded meanwhile.
        result = run_op(script_id="count", args=[str(marker), "0.5"], retries=1).execute(
            task_context(task, try_number=2, max_tries=1)
        )
        assert result["stdout"] == "done run 1\n" and rig.runs(marker) == 1  # reattached, not run twice


# ------------------------------------------------------------------------------------------------
# non-JSON and truncated bodies, HTML error pages, slow answers


TIMEOUT = 0.5  # the connection's request timeout in these scenarios
#: (label, fault kind, params, expected error class, GET retried?, expected attributes)
BODY_FAULTS = [
    ("non-JSON 200 body", "non_json", {"body": "OK\n"}, ScriptRunnerResponseError, False,
     {"status_code": 200, "error_code": None, "body_excerpt": "OK\n"}),
    ("cut-off JSON text in a complete 200 body", "non_json", {"body": '{"ok": true, "jobId": "j", "sta'}, ScriptRunnerResponseError, False,
     {"status_code": 200, "error_code": None, "body_excerpt": '{"ok": true, "jobId": "j", "sta'}),
    ("HTML 502 page from a reverse proxy", "html", {"code": 502}, ScriptRunnerResponseError, True, {"status_code": 502, "error_code": None}),
    ("HTML 200 page (captive portal)", "html", {"code": 200}, ScriptRunnerResponseError, False, {"status_code": 200, "error_code": None}),
    ("truncated body (Content-Length larger than body, then close)", "truncate", {}, ScriptRunnerConnectionError, True,
     {"may_have_reached_server": True}),
    ("slow answer past the request timeout", "delay", {"seconds": 1.5}, ScriptRunnerTimeoutError, True, {"may_have_reached_server": True}),
]  # fmt: skip


async def _async_get_job(job_id: str) -> Any:
    async with ScriptRunnerAsyncHook() as hook:
        return await hook.get_job(job_id)


def _get_job(client: str, job_id: str) -> Any:
    return ScriptRunnerHook().get_job(job_id) if client == "sync" else asyncio.run(_async_get_job(job_id))


def _check_attrs(err: BaseException, attrs: dict[str, Any]) -> None:
    for name, value in attrs.items():
        assert getattr(err, name) == value, (name, getattr(err, name), value)
    if isinstance(err, ScriptRunnerResponseError) and "html" in err.body_excerpt:
        assert err.body_excerpt.startswith("<html>") and "nginx" in err.body_excerpt


@pytest.mark.parametrize("client", ["sync", "async"])
@pytest.mark.parametrize(
    ("label", "kind", "params", "error", "retried", "attrs"), BODY_FAULTS, ids=[f[0] for f in BODY_FAULTS]
)
def test_bad_answers_to_get_are_clear_errors_and_retried_only_when_transient(
    rig, retry_waits, leak, table, client, label, kind, params, error, retried, attrs
):
    rig.set_extra(timeout=TIMEOUT)
    job_id = ScriptRunnerHook().run_script("echo", ["x"]).job_id
    path = f"/jobs/{job_id}"
    for _ in range(2 if kind == "delay" else RUNS):  # a slow answer costs 4 timeouts per run
        with table.run(f"GET /jobs/{{id}}: {label}"):
            # A fault that does not go away: a clear error after 1 try, or after 1 + 3 retries.
            seen = rig.proxy.count("GET", path)
            rule = rig.proxy.inject(kind, method="GET", path=path, times=100, **params)
            with leak.raises(error) as info:
                _get_job(client, job_id)
            assert type(info.value) is error
            _check_attrs(info.value, attrs)
            assert job_id in str(info.value) and rig.url in str(info.value)
            expected = 4 if retried else 1
            assert_count(rig, "GET", path, seen + expected)
            rule.times = rule.fired  # used up
            if retried:
                # One bad answer, then a good one: the caller never notices.
                rig.proxy.inject(kind, method="GET", path=path, **params)
                job = _get_job(client, job_id)
                assert (job.job_id, job.status, job.stdout_size) == (job_id, JobStatus.SUCCEEDED, 2)
                assert rig.proxy.pending() == 0


@pytest.mark.parametrize(
    ("label", "kind", "params", "error", "retried", "attrs"), BODY_FAULTS, ids=[f[0] for f in BODY_FAULTS]
)
def test_bad_answers_to_post_run_are_clear_errors_and_never_retried(
    rig, retry_waits, leak, table, label, kind, params, error, retried, attrs
):
    rig.set_extra(timeout=TIMEOUT)
    for i in range(RUNS):
        with table.run(f"POST /run: {label}") as run:
            marker = rig.marker(f"post{i}")
            jobs_before = len(rig.server_jobs())
            seen = rig.proxy.count("POST", "/run")
            # forward=True: the server gets the request (and starts the script); the answer is bad.
            rig.proxy.inject(kind, method="POST", path="/run", **{**params, "forward": True})
            with leak.raises(error) as info:
                ScriptRunnerHook().submit_script("count", [str(marker)])
            # Whatever a GET would do (``retried``), POST /run is sent once.
            assert type(info.value) is error
            _check_attrs(info.value, attrs)
            assert info.value.url == f"{rig.url}/run"
            if isinstance(info.value, ScriptRunnerConnectionError):
                assert "may have reached the server" in str(info.value) and "not sent again" in str(
                    info.value
                )
            assert_count(rig, "POST", "/run", seen + 1)  # never sent twice
            jobs = settle(rig, jobs_before, 1)
            run.duplicates = max(0, len(jobs) - 1) + max(0, rig.runs(marker) - 1)
            run.lost = 1
            assert len(jobs) == 1 and rig.runs(marker) == 1


# ------------------------------------------------------------------------------------------------
# the server restarts mid-job; the server forgets a job


def _execute(op: ScriptRunnerRunScriptOperator, run_id: str, try_number: int = 1) -> Any:
    """Run a try of the task instance of ``run_id``."""
    return run_deferred(op, task_context(run_id, try_number=try_number))


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
@pytest.mark.parametrize("crash", [False, True], ids=["restart", "crash"])
def test_server_restart_mid_job_fails_as_killed_or_lost_and_a_retry_succeeds(
    rig, retry_waits, leak, table, variables, deferrable, crash
):
    # Polls during the restart get the proxy's 502: retried with the real backoff, scaled down.
    retry_waits.scale = 0.3
    label = "server crash (SIGKILL) mid-job" if crash else "server restart mid-job"
    for i in range(2):
        with table.run(f"{label} ({'deferrable' if deferrable else 'worker'})") as run:
            marker = rig.marker(f"restart{i}")
            task = new_task()
            # "long" runs until stopped: a restart can take seconds (the harness's stop_timeout).
            op = run_op(script_id="long", args=[str(marker)], deferrable=deferrable, poll_interval=0.1)
            thread, outcome = in_thread(_execute, op, task)
            # Once the task knows its job id (a restart before the answer to POST /run is another fault).
            pid = wait_for(lambda: op.job_id and rig.pid(marker))
            rig.server.restart(kill=crash)
            thread.join(30)
            assert not thread.is_alive() and outcome
            err = leak.note(outcome[0])
            assert isinstance(err, ScriptRunnerJobError), (repr(err), rig.proxy.events)
            assert err.job is not None and err.job.was_killed_or_lost and err.job.job_id == op.job_id
            assert "ended with code -1" in str(err) and "server restarted" in str(err)
            assert ScriptRunnerHook().get_job(op.job_id).status is JobStatus.FAILED
            assert variables.values == {}  # nothing to reattach to: the next try starts afresh
            run.orphans = int(process_alive(pid))
            if not crash:
                assert run.orphans == 0  # a graceful stop ends its scripts
            # The task's next try: a fresh job, which succeeds.
            retry = run_op(script_id="count", args=[str(marker), "0"], deferrable=deferrable)
            result = _execute(retry, task, try_number=2)
            assert result["status"] == "succeeded" and result["job_id"] != op.job_id
            assert result["stdout"] == "done run 2\n"  # run 1 was the lost job, run 2 this one
            if crash:  # the harness reaps what the crashed server left behind
                rig.server.stop()
                rig.server.start()


def _forget_running_job(rig: Rig, marker: Path) -> str:
    """Start a job, then restart the server with its state wiped: it no longer knows the job."""
    job_id = ScriptRunnerHook().submit_script("long", [str(marker)])
    wait_for(lambda: rig.pid(marker))
    rig.server.stop()
    shutil.rmtree(rig.server.state_dir)
    rig.server.start()
    return job_id


def test_server_forgets_the_job_clear_failure_everywhere(rig, retry_waits, leak, table):
    retry_waits.scale = 0.3
    for i in range(2):
        with table.run("server forgets the job (restart with wiped state) mid-job") as run:
            marker = rig.marker(f"forget{i}")
            task = new_task()
            op = run_op(script_id="long", args=[str(marker)], poll_interval=0.1)
            thread, outcome = in_thread(_execute, op, task)
            pid = wait_for(lambda: op.job_id and rig.pid(marker))
            rig.server.stop()
            shutil.rmtree(rig.server.state_dir)
            rig.server.start()
            thread.join(30)
            err = leak.note(outcome[0])
            assert isinstance(err, ScriptRunnerJobNotFoundError), repr(err)
            assert err.error_code == "JOB_NOT_FOUND" and err.status_code == 404 and op.job_id in str(err)
            run.orphans = int(process_alive(pid))
            # The next try finds the remembered job unknown and starts afresh.
            result = _execute(run_op(script_id="count", args=[str(marker), "0"]), task, try_number=2)
            assert result["status"] == "succeeded" and result["job_id"] != op.job_id

    # The deferred path, the sensor (poke and deferred) and the trigger on a forgotten job.
    with table.run("server forgets the job (restart with wiped state) mid-job"):
        marker = rig.marker("forget-deferred")
        op = run_op(script_id="long", args=[str(marker)], deferrable=True, poll_interval=0.1)
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(make_context())
        rig.server.stop()
        shutil.rmtree(rig.server.state_dir)
        rig.server.start()
        event = asyncio.run(first_event(deferred.value.trigger))
        assert event["kind"] == "error" and event["error_code"] == "JOB_NOT_FOUND"
        with leak.raises(ScriptRunnerJobError, match="unknown to the server \\(JOB_NOT_FOUND\\)"):
            op.execute_complete(make_context(), event)

    for i, check in enumerate(_JOB_NOT_FOUND_CHECKS.values()):
        for forgotten in (False, True):
            with table.run(
                "JOB_NOT_FOUND (a job id never known, or forgotten) in sensor, trigger, cancel/logs/run operators"
            ):
                job_id = _forget_running_job(rig, rig.marker(f"forgotten{i}")) if forgotten else "job_0_0"
                check(job_id, leak)


def _sensor_poke(job_id: str, leak: Any) -> None:
    with leak.raises(
        AirflowFailException, match=f"job {job_id} is unknown to the server \\(JOB_NOT_FOUND\\)"
    ):
        ScriptRunnerJobSensor(task_id="s", job_id=job_id, poke_interval=0.1).poke(make_context())


def _sensor_deferred(job_id: str, leak: Any) -> None:
    # A job that is gone before the sensor starts: it fails at once, without deferring.
    with leak.raises(AirflowFailException, match="JOB_NOT_FOUND"):
        ScriptRunnerJobSensor(
            task_id="s", job_id=job_id, deferrable=True, poke_interval=0.1, timeout=10
        ).execute(make_context())
    # ... and one lost while deferred: the trigger's error event fails the sensor without retries.
    sensor = ScriptRunnerJobSensor(task_id="s", job_id=job_id, deferrable=True, poke_interval=0.1, timeout=10)
    event = asyncio.run(
        first_event(ScriptRunnerJobTrigger(job_id=job_id, poll_interval=0.05, cancel_on_kill=False))
    )
    with leak.raises(AirflowFailException, match="JOB_NOT_FOUND"):
        sensor.execute_complete(make_context(), event)


def _trigger(job_id: str, leak: Any) -> None:
    event = JobEvent.from_dict(
        asyncio.run(first_event(ScriptRunnerJobTrigger(job_id=job_id, poll_interval=0.05)))
    )
    assert (event.kind, event.error_code, event.job_id) == ("error", "JOB_NOT_FOUND", job_id)
    assert "unknown to the server" in event.message
    leak.note(event.message)


def _cancel_operator(job_id: str, leak: Any) -> None:
    # A job id the task was given and the server does not know: failed at once, no retries.
    with leak.raises(AirflowFailException) as info:
        ScriptRunnerCancelJobOperator(task_id="c", job_id=job_id, poll_interval=0.05).execute(make_context())
    assert type(info.value.__cause__) is ScriptRunnerJobNotFoundError
    assert info.value.__cause__.error_code == "JOB_NOT_FOUND" and job_id in str(info.value)


def _logs_operator(job_id: str, leak: Any) -> None:
    with leak.raises(AirflowFailException) as info:
        ScriptRunnerGetJobLogsOperator(task_id="l", job_id=job_id).execute(make_context())
    assert type(info.value.__cause__) is ScriptRunnerJobNotFoundError
    assert info.value.__cause__.error_code == "JOB_NOT_FOUND"


def _reattach(job_id: str, leak: Any) -> None:
    # A new try whose remembered job is unknown to the server starts a new job.
    from airflow.sdk import Variable  # the in-memory fake of the ``variables`` fixture

    run_id = new_task()
    Variable.set(f"scriptrunner_job__faults__{run_id}__run__-1", job_id)
    result = run_op(script_id="echo", args=["again"]).execute(task_context(run_id, try_number=2))
    assert result["job_id"] != job_id and result["stdout"] == "again\n"


_JOB_NOT_FOUND_CHECKS = {
    "sensor poke": _sensor_poke,
    "sensor deferrable": _sensor_deferred,
    "trigger": _trigger,
    "cancel operator": _cancel_operator,
    "logs operator": _logs_operator,
    "run operator reattach": _reattach,
}


# ------------------------------------------------------------------------------------------------
# SIGTERM to a worker-mode task process

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("moment", ["while polling", "while POST /run is in flight"])
def test_sigterm_to_a_worker_task_process_cancels_the_job_and_leaves_no_process(rig, leak, table, moment):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    for i in range(2):  # each run starts a Python process that imports Airflow
        with table.run(f"SIGTERM to a worker-mode task process ({moment})") as run:
            marker = rig.marker(f"sigterm{i}")
            outcome_path = rig.work / f"outcome{i}.json"
            polls = rig.proxy.count("GET", JOB_PATH)
            if moment != "while polling":
                # The server starts the script at once; the task gets the job id 1.5 s later.
                rig.proxy.inject("delay", method="POST", path="/run", seconds=1.5)
            child = subprocess.Popen(
                [sys.executable, str(CHILD), str(marker), str(outcome_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                cwd=ROOT, env=env, start_new_session=True,
            )  # fmt: skip
            try:
                pid = wait_for(lambda: rig.pid(marker) or child.poll() is not None, 60)
                assert child.poll() is None, child.communicate()[0].decode()[-3000:]
                pgid = os.getpgid(pid)
                jobs = wait_for(lambda: [j for j in rig.server_jobs() if j["status"] == "running"])
                assert len(jobs) == 1
                if moment == "while polling":
                    wait_for(lambda: rig.proxy.count("GET", JOB_PATH) > polls)
                else:
                    assert rig.proxy.count("GET", JOB_PATH) == polls  # the task does not know its job yet
                child.send_signal(signal.SIGTERM)
                try:
                    output = child.communicate(timeout=30)[0].decode()
                except subprocess.TimeoutExpired:
                    child.send_signal(signal.SIGUSR1)  # the child dumps its threads' stacks
                    time.sleep(1)
                    os.killpg(child.pid, signal.SIGKILL)
                    output = child.communicate(timeout=10)[0].decode()
                    lines = "\n".join(line for line in output.splitlines() if "] tick " not in line)
                    raise AssertionError(
                        f"the task process did not end after SIGTERM:\n{lines[-8000:]}"
                    ) from None
            finally:
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait(10)
            leak.note(output)
            outcome = json.loads(outcome_path.read_text())
            assert outcome.get("error") == "ScriptRunnerJobError", (outcome, output[-3000:])
            assert (
                "was canceled on the server" in outcome["message"] and outcome["job_id"] == jobs[0]["jobId"]
            )
            assert f"Canceled job {outcome['job_id']} because the task was killed" in output
            job = ScriptRunnerHook().get_job(outcome["job_id"])
            assert (job.status, job.exit_code) == (JobStatus.CANCELED, -1)
            assert rig.proxy.count("POST", f"/jobs/{outcome['job_id']}/cancel", forwarded=True) == 1
            wait_for(lambda: not process_group_alive(pgid), 10)
            run.orphans = int(process_alive(pid))
            assert run.orphans == 0 and rig.runs(marker) == 1


# ------------------------------------------------------------------------------------------------
# bad inputs at every public entry point


def _hook() -> ScriptRunnerHook:
    return ScriptRunnerHook()


async def _ahook(method: str, *args: Any, **kwargs: Any) -> Any:
    async with ScriptRunnerAsyncHook() as hook:
        result = getattr(hook, method)(*args, **kwargs)
        if hasattr(result, "__aiter__"):
            return [chunk async for chunk in result]
        return await result


def _consume(result: Any) -> Any:
    if asyncio.iscoroutine(result):
        return asyncio.run(result)
    if hasattr(result, "__next__"):
        return list(result)
    return result


def _op(cls: type, **kwargs: Any) -> Any:
    kwargs.setdefault("task_id", "t")
    return cls(**kwargs)


def _sensor(**kwargs: Any) -> ScriptRunnerJobSensor:
    return ScriptRunnerJobSensor(task_id="s", poke_interval=0.1, timeout=5, **kwargs)


def _trigger_with(**kwargs: Any) -> ScriptRunnerJobTrigger:
    kwargs.setdefault("job_id", "job_1_1")
    return ScriptRunnerJobTrigger(**kwargs)


R, S, D = ScriptRunnerRunScriptOperator, ScriptRunnerSubmitScriptOperator, ScriptRunnerCancelJobOperator
L = ScriptRunnerGetJobLogsOperator
NAN, INF = float("nan"), float("inf")

#: (entry point and value, call, accepted error types, the parameter the message must name).
#: Each must fail before any request leaves.
REJECTED_BEFORE_ANY_REQUEST: list[tuple[str, Any, tuple[type, ...], str]] = [
    # the sync hook
    ("hook.submit_script(None)", lambda: _hook().submit_script(None), (TypeError,), "script_id"),
    ("hook.submit_script(42)", lambda: _hook().submit_script(42), (TypeError,), "script_id"),
    ("hook.submit_script('')", lambda: _hook().submit_script(""), (ValueError,), "script_id"),
    ("hook.submit_script('  ')", lambda: _hook().submit_script("  "), (ValueError,), "script_id"),
    ("hook.submit_script(args='a b')", lambda: _hook().submit_script("echo", "a b"), (TypeError,), "args"),
    ("hook.submit_script(args={})", lambda: _hook().submit_script("echo", {"a": 1}), (TypeError,), "args"),
    ("hook.submit_script(args=7)", lambda: _hook().submit_script("echo", 7), (TypeError,), "args"),
    ("hook.submit_script(args=[None])", lambda: _hook().submit_script("echo", [None]), (TypeError,), "args[0]"),
    ("hook.submit_script(args=['ok', True])", lambda: _hook().submit_script("echo", ["ok", True]), (TypeError,), "args[1]"),
    ("hook.submit_script(args=[b'x'])", lambda: _hook().submit_script("echo", [b"x"]), (TypeError,), "args[0]"),
    ("hook.submit_script(args=[['x']])", lambda: _hook().submit_script("echo", [["x"]]), (TypeError,), "args[0]"),
    ("hook.submit_script(args=[lone surrogate])", lambda: _hook().submit_script("echo", ["ok", "\ud800"]), (ValueError,), "args[1]"),
    ("hook.run_script(None)", lambda: _hook().run_script(None), (TypeError,), "script_id"),
    ("hook.run_script(args='x')", lambda: _hook().run_script("echo", "x"), (TypeError,), "args"),
    ("hook.run_script(timeout=-1)", lambda: _hook().run_script("echo", timeout=-1), (ValueError,), "timeout"),
    ("hook.run_script(timeout='5')", lambda: _hook().run_script("echo", timeout="5"), (ValueError,), "timeout"),
    ("hook.get_job(None)", lambda: _hook().get_job(None), (TypeError,), "job_id"),
    ("hook.get_job(123)", lambda: _hook().get_job(123), (TypeError,), "job_id"),
    ("hook.get_job('')", lambda: _hook().get_job(""), (ValueError,), "job_id"),
    ("hook.get_job('   ')", lambda: _hook().get_job("   "), (ValueError,), "job_id"),
    ("hook.get_job('..')", lambda: _hook().get_job(".."), (ValueError,), "job_id"),
    ("hook.get_job('.')", lambda: _hook().get_job("."), (ValueError,), "job_id"),
    ("hook.get_job(' .. ')", lambda: _hook().get_job(" .. "), (ValueError,), "job_id"),
    ("hook.cancel_job(None)", lambda: _hook().cancel_job(None), (TypeError,), "job_id"),
    ("hook.cancel_job('..')", lambda: _hook().cancel_job(".."), (ValueError,), "job_id"),
    ("hook.get_log_page(None)", lambda: _hook().get_log_page(None), (TypeError,), "job_id"),
    ("hook.get_log_page('..')", lambda: _hook().get_log_page(".."), (ValueError,), "job_id"),
    ("hook.get_log_page(stream='both')", lambda: _hook().get_log_page("job_1_1", "both"), (ValueError,), "stream"),
    ("hook.get_log_page(stream=None)", lambda: _hook().get_log_page("job_1_1", None), (ValueError,), "stream"),
    ("hook.get_log_page(offset=-1)", lambda: _hook().get_log_page("job_1_1", offset=-1), (ValueError,), "offset"),
    ("hook.get_log_page(offset='0')", lambda: _hook().get_log_page("job_1_1", offset="0"), (TypeError,), "offset"),
    ("hook.get_log_page(offset=1.5)", lambda: _hook().get_log_page("job_1_1", offset=1.5), (TypeError,), "offset"),
    ("hook.get_log_page(offset=None)", lambda: _hook().get_log_page("job_1_1", offset=None), (TypeError,), "offset"),
    ("hook.get_log_page(limit=-1)", lambda: _hook().get_log_page("job_1_1", limit=-1), (ValueError,), "limit"),
    ("hook.get_log_page(limit=0)", lambda: _hook().get_log_page("job_1_1", limit=0), (ValueError,), "limit"),
    ("hook.get_log_page(limit=2**21)", lambda: _hook().get_log_page("job_1_1", limit=2**21), (ValueError,), "limit"),
    ("hook.get_log_page(limit='10')", lambda: _hook().get_log_page("job_1_1", limit="10"), (TypeError,), "limit"),
    ("hook.iter_log(None)", lambda: _hook().iter_log(None), (TypeError,), "job_id"),
    ("hook.iter_log(page_size=0)", lambda: _hook().iter_log("job_1_1", page_size=0), (ValueError,), "page_size"),
    ("hook.iter_log(page_size=3)", lambda: _hook().iter_log("job_1_1", page_size=3), (ValueError,), "page_size"),
    ("hook.iter_log(page_size='big')", lambda: _hook().iter_log("job_1_1", page_size="big"), (TypeError,), "page_size"),
    ("hook.iter_log(max_bytes=-1)", lambda: _hook().iter_log("job_1_1", max_bytes=-1), (ValueError,), "max_bytes"),
    ("hook.iter_log(offset=-5)", lambda: _hook().iter_log("job_1_1", offset=-5), (ValueError,), "offset"),
    ("ScriptRunnerHook(None)", lambda: ScriptRunnerHook(None), (ValueError,), "scriptrunner_conn_id"),
    ("ScriptRunnerHook('')", lambda: ScriptRunnerHook(""), (ValueError,), "scriptrunner_conn_id"),
    ("ScriptRunnerHook(retries=-1)", lambda: ScriptRunnerHook(retries=-1), (ValueError,), "retries"),
    ("ScriptRunnerHook(retries='3')", lambda: ScriptRunnerHook(retries="3"), (ValueError,), "retries"),
    # the async hook (the trigger's)
    ("async hook.get_job(None)", lambda: _ahook("get_job", None), (TypeError,), "job_id"),
    ("async hook.get_job('..')", lambda: _ahook("get_job", ".."), (ValueError,), "job_id"),
    ("async hook.cancel_job('')", lambda: _ahook("cancel_job", ""), (ValueError,), "job_id"),
    ("async hook.get_log_page(stream='x')", lambda: _ahook("get_log_page", "job_1_1", "x"), (ValueError,), "stream"),
    ("async hook.get_log_page(offset=-1)", lambda: _ahook("get_log_page", "job_1_1", offset=-1), (ValueError,), "offset"),
    ("async hook.get_log_page(limit=0)", lambda: _ahook("get_log_page", "job_1_1", limit=0), (ValueError,), "limit"),
    ("async hook.iter_log(page_size=2)", lambda: _ahook("iter_log", "job_1_1", page_size=2), (ValueError,), "page_size"),
    ("async hook.iter_log(None)", lambda: _ahook("iter_log", None), (TypeError,), "job_id"),
    ("ScriptRunnerAsyncHook(retries=-2)", lambda: ScriptRunnerAsyncHook(retries=-2), (ValueError,), "retries"),
    # operators: execute
    ("run operator execute(script_id=None)", lambda: _op(R, script_id=None).execute(make_context()), (AirflowFailException,), "script_id"),
    ("run operator execute(script_id='')", lambda: _op(R, script_id="").execute(make_context()), (AirflowFailException,), "script_id"),
    ("run operator execute(args='a b')", lambda: _op(R, script_id="echo", args="a b").execute(make_context()), (AirflowFailException,), "args"),
    ("run operator execute(args=[None])", lambda: _op(R, script_id="echo", args=[None]).execute(make_context()), (AirflowFailException,), "args[0]"),
    ("run operator execute(args=[lone surrogate])", lambda: _op(R, script_id="echo", args=["\udfff"]).execute(make_context()), (AirflowFailException,), "args[0]"),
    ("run operator (deferrable) execute(script_id=None)", lambda: _op(R, script_id=None, deferrable=True).execute(make_context()), (AirflowFailException,), "script_id"),
    ("submit operator execute(script_id=None)", lambda: _op(S, script_id=None).execute(make_context()), (AirflowFailException,), "script_id"),
    ("submit operator execute(args={'x': 1})", lambda: _op(S, script_id="echo", args={"x": 1}).execute(make_context()), (AirflowFailException,), "args"),
    ("cancel operator execute(job_id=None)", lambda: _op(D, job_id=None).execute(make_context()), (AirflowFailException,), "job_id"),
    ("cancel operator execute(job_id='')", lambda: _op(D, job_id="").execute(make_context()), (AirflowFailException,), "job_id"),
    ("cancel operator execute(job_id='..')", lambda: _op(D, job_id="..").execute(make_context()), (AirflowFailException,), "job_id"),
    ("logs operator execute(job_id=None)", lambda: _op(L, job_id=None).execute(make_context()), (AirflowFailException,), "job_id"),
    ("logs operator execute(job_id='..')", lambda: _op(L, job_id="..").execute(make_context()), (AirflowFailException,), "job_id"),
    ("logs operator execute(stream='all')", lambda: _op(L, job_id="job_1_1", stream="all").execute(make_context()), (AirflowFailException,), "stream"),
    # operators: construction
    ("run operator(poll_interval=None)", lambda: _op(R, script_id="echo", poll_interval=None), (ValueError,), "poll_interval"),
    ("run operator(poll_interval=-1)", lambda: _op(R, script_id="echo", poll_interval=-1), (ValueError,), "poll_interval"),
    ("run operator(timeout='1h')", lambda: _op(R, script_id="echo", timeout="1h"), (ValueError,), "timeout"),
    ("run operator(max_output_bytes=-1)", lambda: _op(R, script_id="echo", max_output_bytes=-1), (ValueError,), "max_output_bytes"),
    ("run operator(log_page_bytes=0)", lambda: _op(R, script_id="echo", log_page_bytes=0), (ValueError,), "log_page_bytes"),
    ("run operator(skip_on_exit_code='3')", lambda: _op(R, script_id="echo", skip_on_exit_code="3"), (TypeError,), "skip_on_exit_code"),
    ("logs operator(offset=-1)", lambda: _op(L, job_id="job_1_1", offset=-1), (ValueError,), "offset"),
    ("logs operator(limit=0)", lambda: _op(L, job_id="job_1_1", limit=0), (ValueError,), "limit"),
    ("logs operator(max_output_bytes=-1)", lambda: _op(L, job_id="job_1_1", max_output_bytes=-1), (ValueError,), "max_output_bytes"),
    ("logs operator(log_page_bytes='x')", lambda: _op(L, job_id="job_1_1", log_page_bytes="x"), (ValueError,), "log_page_bytes"),
    ("cancel operator(wait_timeout=0)", lambda: _op(D, job_id="job_1_1", wait_timeout=0), (ValueError,), "wait_timeout"),
    ("cancel operator(poll_interval=None)", lambda: _op(D, job_id="job_1_1", poll_interval=None), (ValueError,), "poll_interval"),
    # the sensor
    ("sensor poke(job_id=None)", lambda: _sensor(job_id=None).poke(make_context()), (AirflowFailException,), "job_id"),
    ("sensor poke(job_id='')", lambda: _sensor(job_id="").poke(make_context()), (AirflowFailException,), "job_id"),
    ("sensor (deferrable) execute(job_id='..')", lambda: _sensor(job_id="..", deferrable=True).execute(make_context()), (AirflowFailException,), "job_id"),
    ("sensor (deferrable) execute(job_id=42)", lambda: _sensor(job_id=42, deferrable=True).execute(make_context()), (AirflowFailException,), "job_id"),
    # the trigger's constructor
    ("trigger(job_id=None)", lambda: _trigger_with(job_id=None), (TypeError,), "job_id"),
    ("trigger(job_id='')", lambda: _trigger_with(job_id=""), (ValueError,), "job_id"),
    ("trigger(job_id='..')", lambda: _trigger_with(job_id=".."), (ValueError,), "job_id"),
    ("trigger(job_id=42)", lambda: _trigger_with(job_id=42), (TypeError,), "job_id"),
    ("trigger(scriptrunner_conn_id=None)", lambda: _trigger_with(scriptrunner_conn_id=None), (ValueError,), "scriptrunner_conn_id"),
    ("trigger(poll_interval=None)", lambda: _trigger_with(poll_interval=None), (ValueError,), "poll_interval"),
    ("trigger(poll_interval='5')", lambda: _trigger_with(poll_interval="5"), (ValueError,), "poll_interval"),
    ("trigger(poll_interval=0)", lambda: _trigger_with(poll_interval=0), (ValueError,), "poll_interval"),
    ("trigger(poll_interval=nan)", lambda: _trigger_with(poll_interval=NAN), (ValueError,), "poll_interval"),
    ("trigger(poll_interval=inf)", lambda: _trigger_with(poll_interval=INF), (ValueError,), "poll_interval"),
    ("trigger(deadline at 'soon')", lambda: _trigger_with(deadline={"at": "soon", "limit": "timeout", "seconds": 1}), (ValueError,), "deadline['at']"),
    ("trigger(deadline at nan)", lambda: _trigger_with(deadline={"at": NAN, "limit": "timeout", "seconds": 1}), (ValueError,), "deadline['at']"),
    ("trigger(max_consecutive_errors=0)", lambda: _trigger_with(max_consecutive_errors=0), (ValueError,), "max_consecutive_errors"),
    ("trigger(max_consecutive_errors=None)", lambda: _trigger_with(max_consecutive_errors=None), (ValueError,), "max_consecutive_errors"),
    ("trigger(max_consecutive_errors='3')", lambda: _trigger_with(max_consecutive_errors="3"), (ValueError,), "max_consecutive_errors"),
]  # fmt: skip


def _collect(failures: list[str], name: str, check: Any, table: Any, fault: str) -> None:
    """Run one case as one run of ``fault``; a failed assertion is collected, not raised at once."""
    try:
        with table.run(fault):
            check()
    except AssertionError as err:
        failures.append(f"{name}: {err}")


def test_bad_inputs_fail_clearly_before_any_request(rig, leak, table):
    failures: list[str] = []
    for name, call, errors, param in REJECTED_BEFORE_ANY_REQUEST:

        def check() -> None:
            requests_before, connections_before = rig.proxy.count(), rig.proxy.connections
            with leak.raises(Exception) as info:
                _consume(call())
            err = info.value
            assert isinstance(err, errors), f"{type(err).__name__}: {err}"  # not a traceback from deep inside
            assert param in str(err), f"the message does not name {param!r}: {err}"
            assert (rig.proxy.count(), rig.proxy.connections) == (requests_before, connections_before), (
                "a request was sent"
            )

        _collect(failures, name, check, table, "bad input rejected before any request")
    assert not failures, "\n".join(failures)
    assert rig.proxy.connections == 0 and rig.server_jobs() == []


#: (entry point and value, call, expected error type, server error code, request path the proxy must see).
#: Each reaches the server once (never retried) and surfaces the server's own error; an operator's
#: task fails at once (AirflowFailException: another try would fail the same way).
SURFACED_FROM_THE_SERVER: list[tuple[str, Any, type, str | None, str]] = [
    ("hook.submit_script(args=[1025 chars])", lambda: _hook().submit_script("echo", ["x" * 1025]), ScriptRunnerApiError, "INVALID_ARGS", "POST /run"),
    ("run operator execute(args=[1025 × 'é'])", lambda: _op(R, script_id="echo", args=["é" * 1025]).execute(make_context()), AirflowFailException, "INVALID_ARGS", "POST /run"),
    ("hook.submit_script(11 args)", lambda: _hook().submit_script("echo", [str(i) for i in range(11)]), ScriptRunnerApiError, "INVALID_ARGS", "POST /run"),
    ("hook.submit_script(args=[NUL inside])", lambda: _hook().submit_script("echo", ["a\x00b"]), ScriptRunnerApiError, "INVALID_ARGS", "POST /run"),
    ("hook.run_script(args=[3 MB])", lambda: _hook().run_script("echo", ["x" * 3_000_000]), ScriptRunnerApiError, "INTERNAL_ERROR", "POST /run"),
    ("submit operator execute(script_id='no-such-script')", lambda: _op(S, script_id="no-such-script").execute(make_context()), AirflowFailException, "SCRIPT_NOT_FOUND", "POST /run"),
    ("hook.submit_script('スクリプト')", lambda: _hook().submit_script("スクリプト"), ScriptRunnerApiError, "SCRIPT_NOT_FOUND", "POST /run"),
    ("hook.get_job('../x')", lambda: _hook().get_job("../x"), ScriptRunnerJobNotFoundError, "JOB_NOT_FOUND", "GET /jobs/..%2Fx"),
    ("hook.get_job('a/b')", lambda: _hook().get_job("a/b"), ScriptRunnerJobNotFoundError, "JOB_NOT_FOUND", "GET /jobs/a%2Fb"),
    ("hook.get_job('%2e%2e')", lambda: _hook().get_job("%2e%2e"), ScriptRunnerJobNotFoundError, "JOB_NOT_FOUND", "GET /jobs/%252e%252e"),
    ("hook.get_job('a?b#c')", lambda: _hook().get_job("a?b#c"), ScriptRunnerJobNotFoundError, "JOB_NOT_FOUND", "GET /jobs/a%3Fb%23c"),
    ("hook.cancel_job('../run')", lambda: _hook().cancel_job("../run"), ScriptRunnerJobNotFoundError, "JOB_NOT_FOUND", "POST /jobs/..%2Frun/cancel"),
    ("hook.get_log_page('../x')", lambda: _hook().get_log_page("../x"), ScriptRunnerJobNotFoundError, "JOB_NOT_FOUND", "GET /jobs/..%2Fx/logs"),
    ("hook.get_log_page('job_0_0', offset=10**12)", lambda: _hook().get_log_page("job_0_0", offset=10**12), ScriptRunnerJobNotFoundError, "JOB_NOT_FOUND", "GET /jobs/job_0_0/logs"),
    ("hook.get_job(100,000 chars)", lambda: _hook().get_job("j" * 100_000), ScriptRunnerResponseError, None, "GET /jobs/" + "j" * 100_000),
    ("async hook.get_job('a/b')", lambda: _ahook("get_job", "a/b"), ScriptRunnerJobNotFoundError, "JOB_NOT_FOUND", "GET /jobs/a%2Fb"),
    ("async hook.cancel_job('../run')", lambda: _ahook("cancel_job", "../run"), ScriptRunnerJobNotFoundError, "JOB_NOT_FOUND", "POST /jobs/..%2Frun/cancel"),
    ("sensor poke(job_id='a/b')", lambda: _sensor(job_id="a/b").poke(make_context()), AirflowFailException, None, "GET /jobs/a%2Fb"),
    ("cancel operator execute(job_id='../x')", lambda: _op(D, job_id="../x").execute(make_context()), AirflowFailException, "JOB_NOT_FOUND", "POST /jobs/..%2Fx/cancel"),
    ("logs operator execute(job_id='a/b')", lambda: _op(L, job_id="a/b").execute(make_context()), AirflowFailException, "JOB_NOT_FOUND", "GET /jobs/a%2Fb"),
]  # fmt: skip


def test_bad_inputs_the_server_rejects_surface_its_own_error(rig, leak, table):
    failures: list[str] = []
    for name, call, error, code, request in SURFACED_FROM_THE_SERVER:

        def check() -> None:
            before = len(rig.proxy.events)
            with leak.raises(Exception) as info:
                _consume(call())
            err = info.value
            assert type(err) is error, f"{type(err).__name__}: {str(err)[:300]}"
            if code is not None:
                # An operator fails at once (no retries) with the server's error as the cause.
                server_error = err.__cause__ if type(err) is AirflowFailException else err
                assert server_error.error_code == code and code in str(err), str(err)[:300]
            elif isinstance(err, ScriptRunnerResponseError):
                assert err.status_code == 414, str(err)[:300]  # the server's "Request-URI Too Long"
            else:
                assert "JOB_NOT_FOUND" in str(err), str(err)
            seen = [f"{m} {p}" for m, p, _ in rig.proxy.events[before:]]
            assert seen == [request], f"requests: {[s[:80] for s in seen]}"  # once, to the encoded path

        _collect(failures, name, check, table, "bad input the server rejects: its error surfaced")
    assert not failures, "\n".join(failures)
    assert rig.server_jobs() == []  # nothing ran, "../run" did not become POST /run

    with table.run("bad input the server rejects: its error surfaced"):
        event = JobEvent.from_dict(asyncio.run(first_event(_trigger_with(job_id="../x", poll_interval=0.05))))
        assert (event.kind, event.error_code) == ("error", "JOB_NOT_FOUND")
        leak.note(event.message)


#: Arguments that must reach the script exactly (at most 10 per run: the server's args.maxItems).
UNICODE_ARGS = [
    [
        "héllo wörld",
        "日本語テキスト",
        "emoji 😀🎉 𝄞",
        "RTL עברית العربية",
        "e\u0301 combining",
        "ǅ ß ﬁ \u200b zero-width",
    ],
    [
        'it\'s "quoted" `tick` $(echo no) $HOME ;|& * ?',
        "",
        "  spaces  ",
        "tab\tnew\nline",
        "-n",
        "--",
        "\\back\\slash\\",
        "%s %d",
    ],
    [
        "é" * 1024,
        "\U0010fffd",
        "\x7f\x01 control",
    ],  # 1024 characters (2048 bytes): at the server's itemMaxLength
    [1, 2.5, -3, "4"],  # numbers are passed as their str()
]


def _stdout_via(entry: str, args: list[Any]) -> str:
    if entry == "hook.run_script + iter_log":
        hook = ScriptRunnerHook()
        job = hook.run_script("echo", args)
        return "".join(chunk.text for chunk in hook.iter_log(job.job_id, page_size=61))
    if entry == "run operator (worker)":
        return run_op(script_id="echo", args=args, log_page_bytes=33).execute(make_context())["stdout"]
    if entry == "run operator (deferrable)":
        return run_deferred(run_op(script_id="echo", args=args, deferrable=True), make_context())["stdout"]
    if entry == "submit + logs operators":
        job_id = _op(S, script_id="echo", args=args).execute(make_context())
        wait_for(lambda: ScriptRunnerHook().get_job(job_id).is_terminal)
        return _op(L, job_id=job_id, stream="stdout", log_page_bytes=47).execute(make_context())["stdout"][
            "data"
        ]
    raise AssertionError(entry)


@pytest.mark.parametrize(
    "entry",
    [
        "hook.run_script + iter_log",
        "run operator (worker)",
        "run operator (deferrable)",
        "submit + logs operators",
    ],
)
def test_unicode_and_shell_special_args_pass_through_exactly(rig, leak, table, entry):
    for args in UNICODE_ARGS:
        with table.run("unicode / shell-special args pass through exactly"):
            expected = "".join(f"{arg}\n" for arg in args)
            assert _stdout_via(entry, args) == expected
    assert TOKEN not in json.dumps(rig.server_jobs())


# ------------------------------------------------------------------------------------------------
# the leak check itself


def test_the_leak_check_finds_the_token_in_every_form_and_place(leak, caplog, capfd):
    import logging

    logging.getLogger("fault-suite").warning("header was Bearer %s", TOKEN)
    print(f"basic: {__import__('base64').b64encode(TOKEN.encode()).decode()}")
    leak.note(ScriptRunnerError(f"oops {TOKEN}"))
    out, err = capfd.readouterr()
    assert leak.scan({"logging": caplog.text, "stdout": out, "stderr": err}) == [
        "logging",
        "stdout",
        "errors",
    ]
    # Clean up, so that this test's own teardown check passes.
    caplog.clear()
    leak.texts.clear()
    assert leak.scan({"logging": caplog.text}) == []
