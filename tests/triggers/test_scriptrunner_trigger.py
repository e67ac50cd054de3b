"""ScriptRunnerJobTrigger: polling, backoff, deadlines, kill handling and serialisation, over httpx.MockTransport."""

from __future__ import annotations

import asyncio
import importlib
import json
from types import SimpleNamespace

import httpx
import pytest

from airflow_provider_scriptrunner.client.models import JobStatus, ScriptRunnerJob
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerAsyncHook
from airflow_provider_scriptrunner.task.limits import Deadline
from airflow_provider_scriptrunner.task.outcome import EventKind, JobEvent
from airflow_provider_scriptrunner.task.ownership import CancelVerdict, Owner
from airflow_provider_scriptrunner.triggers import scriptrunner as trigger_module
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger
from tests.conftest import job_body
from tests.triggers.conftest import _real_sleep

JOB = "job_1795342284509_3"
#: The job a newer try of the task started of its own.
OTHER_JOB = "job_1795342299999_4"
#: How judge_job names the job of job_body() (script "quick-echo") in its messages.
NAME = f"script 'quick-echo' (job {JOB})"
NOT_FOUND = (404, {"ok": False, "error": {"code": "JOB_NOT_FOUND", "message": f"job not found: {JOB}"}})


class FakeServer:
    """
    An httpx handler playing script-runner for one job, recording every request.

    GET /jobs/{JOB} answers from ``polls`` in order (the last one repeats); POST /jobs/{JOB}/cancel
    answers ``cancel``. An answer is ``(status, dict-or-text)`` or an exception to raise.
    """

    def __init__(self, *polls, cancel=None):
        self.polls = list(polls)
        self.cancel = (200, job_body(JOB, "canceled")) if cancel is None else cancel
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST":
            assert request.url.path == f"/jobs/{JOB}/cancel"
            answer = self.cancel
        else:
            assert (request.method, request.url.path) == ("GET", f"/jobs/{JOB}")
            answer = self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        if isinstance(body, dict):
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=body, headers={"Content-Type": "text/html"})

    @property
    def gets(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "GET"]

    @property
    def cancels(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST"]


def make_trigger(server: FakeServer, **kwargs) -> ScriptRunnerJobTrigger:
    kwargs.setdefault("poll_interval", 5.0)
    trigger = ScriptRunnerJobTrigger(job_id=JOB, **kwargs)
    trigger._hook = ScriptRunnerAsyncHook(retries=0, transport=httpx.MockTransport(server))
    return trigger


async def run_all(trigger: ScriptRunnerJobTrigger) -> list:
    return [event async for event in trigger.run()]


async def only_event(trigger: ScriptRunnerJobTrigger) -> dict:
    events = await run_all(trigger)
    assert len(events) == 1, f"expected exactly one event, got {events!r}"
    return events[0].payload


def deadline_at(at: float, limit: str = "timeout", seconds: float = 10.0) -> dict:
    """A deadline as the task passes it to the trigger."""
    return Deadline(at, limit, seconds).to_dict()


def state_returning(value):
    async def _state():
        if isinstance(value, Exception):
            raise value
        return value

    return _state


# --------------------------------------------------------------------------------------------
# Terminal states


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "expected_message"),
    [
        (job_body(JOB, "succeeded"), f"{NAME} succeeded"),
        (
            job_body(JOB, "failed", code=3, stderrPreview="boom: disk full\n"),
            f"{NAME} failed with exit code 3. End of stderr:\nboom: disk full",
        ),
        (
            job_body(JOB, "timed_out"),
            f"{NAME} timed out: the server's script timeout (timeoutSec in its scripts.json) fired and stopped it",
        ),
        (job_body(JOB, "canceled"), f"{NAME} was canceled on the server"),
        (
            job_body(JOB, "failed", code=-1),
            (
                f"{NAME} ended with code -1: the script was killed by a signal, or lost when the "
                "script-runner server restarted (the server reports both the same way)"
            ),
        ),
    ],
    ids=["succeeded", "failed-3", "timed_out", "canceled", "failed-minus-1"],
)
async def test_terminal_status_fires_one_event(conn, clock, body, expected_message):
    server = FakeServer((200, body))
    payload = await only_event(make_trigger(server))

    assert payload["kind"] == "ended"
    assert payload["message"] == expected_message
    assert payload["job_id"] == JOB
    assert payload["job"]["status"] == body["status"]
    assert payload["job"]["exit_code"] == body["code"]
    assert len(server.gets) == 1 and not server.cancels
    assert clock.sleeps == []


@pytest.mark.asyncio
async def test_failure_message_quotes_stderr(conn, clock):
    server = FakeServer((200, job_body(JOB, "failed", code=3, stderrPreview="boom: disk full\n")))
    payload = await only_event(make_trigger(server))
    assert "boom: disk full" in payload["message"]


@pytest.mark.asyncio
async def test_polls_queued_and_running_at_the_poll_interval(conn, clock):
    server = FakeServer(
        (200, job_body(JOB, "queued", startedAt=None)),
        (200, job_body(JOB, "running")),
        (200, job_body(JOB, "running", stdoutSize=10)),
        (200, job_body(JOB, "succeeded")),
    )
    payload = await only_event(make_trigger(server, poll_interval=7))

    assert payload["kind"] == "ended"
    assert len(server.gets) == 4
    assert clock.sleeps == [7.0, 7.0, 7.0]  # one pause between polls, none after the last
    assert not server.cancels


@pytest.mark.asyncio
async def test_unknown_status_is_treated_as_not_finished(conn, clock):
    server = FakeServer((200, job_body(JOB, "paused")), (200, job_body(JOB, "succeeded")))
    payload = await only_event(make_trigger(server))
    assert payload["kind"] == "ended"
    assert len(server.gets) == 2


# --------------------------------------------------------------------------------------------
# Transient errors and giving up


@pytest.mark.asyncio
async def test_transient_errors_back_off_then_success(conn, clock):
    server = FakeServer(
        (503, {"ok": False, "error": {"code": "INTERNAL_ERROR", "message": "busy"}}),
        httpx.ConnectError("[Errno 111] Connection refused"),
        (502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
        (200, job_body(JOB, "succeeded")),
    )
    payload = await only_event(make_trigger(server, poll_interval=5))

    assert payload["kind"] == "ended"
    assert len(server.gets) == 4
    assert clock.sleeps == [5.0, 10.0, 20.0]  # exponential backoff from poll_interval


@pytest.mark.asyncio
async def test_error_count_resets_after_a_good_poll(conn, clock):
    server = FakeServer(
        (503, "<html>busy</html>"),
        (200, job_body(JOB, "running")),
        (503, "<html>busy</html>"),
        (503, "<html>busy</html>"),
        (200, job_body(JOB, "succeeded")),
    )
    payload = await only_event(make_trigger(server, poll_interval=5, max_consecutive_errors=3))

    assert payload["kind"] == "ended"  # 3 errors in all, but never 3 in a row
    assert clock.sleeps == [5.0, 5.0, 5.0, 10.0]


@pytest.mark.asyncio
async def test_backoff_is_capped(conn, clock):
    server = FakeServer(*[(503, "<html>busy</html>")] * 4, (200, job_body(JOB, "succeeded")))
    await only_event(make_trigger(server, poll_interval=40))
    assert clock.sleeps == [40.0, 60.0, 60.0, 60.0]
    assert max(clock.sleeps) == trigger_module.MAX_ERROR_BACKOFF


@pytest.mark.asyncio
async def test_too_many_consecutive_errors_fire_error_event(conn, clock):
    server = FakeServer((200, job_body(JOB, "running")), (502, "<html>Bad Gateway</html>"))
    payload = await only_event(make_trigger(server, poll_interval=5, max_consecutive_errors=3))

    assert payload["kind"] == "error"
    assert "3 failed polls in a row" in payload["message"]
    assert "502" in payload["message"]
    assert payload["error_code"] is None
    assert payload["job"]["status"] == "running"  # the last job seen travels with the event
    assert len(server.gets) == 4  # one good poll, then exactly max_consecutive_errors bad ones
    assert clock.sleeps == [5.0, 5.0, 10.0]
    assert not server.cancels


@pytest.mark.asyncio
async def test_job_not_found_fires_error_at_once(conn, clock):
    server = FakeServer(NOT_FOUND)
    payload = await only_event(make_trigger(server, max_consecutive_errors=8))

    assert payload["kind"] == "error"
    assert payload["error_code"] == "JOB_NOT_FOUND"
    assert "JOB_NOT_FOUND" in payload["message"] and JOB in payload["message"]
    assert len(server.gets) == 1  # not retried: it cannot change
    assert clock.sleeps == []
    assert not server.cancels


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "answer",
    [(401, ""), (403, "<html>denied</html>"), (404, "<html>nginx</html>"), (200, "<html>not json</html>")],
    ids=["401", "403", "404-html", "200-html"],
)
async def test_errors_that_waiting_cannot_fix_fire_error_at_once(conn, clock, answer):
    server = FakeServer(answer)
    payload = await only_event(make_trigger(server, max_consecutive_errors=8))

    assert payload["kind"] == "error"
    assert payload["message"].startswith(f"cannot follow job {JOB}")
    assert len(server.gets) == 1
    assert clock.sleeps == []


# --------------------------------------------------------------------------------------------
# Deadline


@pytest.mark.asyncio
async def test_deadline_already_passed_cancels_without_polling(conn, clock):
    server = FakeServer((200, job_body(JOB, "running")), cancel=(200, job_body(JOB, "canceled")))
    payload = await only_event(
        make_trigger(server, deadline=deadline_at(clock.now - 1, "execution_timeout", 20))
    )

    assert payload["kind"] == "timeout"
    assert payload["message"] == f"job {JOB} did not finish within execution_timeout=20 s; it was canceled"
    assert (payload["limit"], payload["canceled"]) == ("execution_timeout", True)
    assert len(server.cancels) == 1 and not server.gets
    assert payload["job"]["status"] == "canceled"  # the job as the cancel call returned it


@pytest.mark.asyncio
async def test_deadline_passing_while_polling_cancels_the_job(conn, clock):
    server = FakeServer((200, job_body(JOB, "running")), cancel=(200, job_body(JOB, "running")))
    payload = await only_event(
        make_trigger(server, poll_interval=5, deadline=deadline_at(clock.now + 12, "timeout", 12))
    )

    assert payload["kind"] == "timeout"
    assert payload["message"] == f"job {JOB} did not finish within timeout=12 s; it was canceled"
    assert (payload["limit"], payload["canceled"]) == ("timeout", True)
    assert clock.sleeps == [5.0, 5.0, 2.0]  # the last pause ends at the deadline, not after it
    assert len(server.gets) == 3
    assert len(server.cancels) == 1
    assert server.requests[-1].method == "POST"  # canceled after the last poll
    assert payload["job"]["status"] == "running"  # server still stopping it (SIGTERM sent)


@pytest.mark.asyncio
async def test_deadline_during_error_backoff_is_kept(conn, clock):
    server = FakeServer((503, "<html>busy</html>"))
    payload = await only_event(make_trigger(server, poll_interval=5, deadline=deadline_at(clock.now + 12)))

    assert payload["kind"] == "timeout"
    assert clock.sleeps == [5.0, 7.0]  # backoff (10 s) cut short at the deadline
    assert len(server.cancels) == 1


@pytest.mark.asyncio
async def test_deadline_without_cancel_on_timeout_leaves_the_job(conn, clock):
    server = FakeServer((200, job_body(JOB, "running")))
    trigger = make_trigger(
        server, poll_interval=5, deadline=deadline_at(clock.now + 10, "timeout", 10), cancel_on_timeout=False
    )
    payload = await only_event(trigger)

    assert payload["kind"] == "timeout"
    assert payload["message"] == f"job {JOB} did not finish within timeout=10 s"
    assert (payload["limit"], payload["canceled"]) == ("timeout", False)
    assert not server.cancels
    assert payload["job"]["status"] == "running"


@pytest.mark.asyncio
async def test_deadline_cancel_failure_still_times_out(conn, clock):
    server = FakeServer((200, job_body(JOB, "running")), cancel=(503, "<html>busy</html>"))
    payload = await only_event(
        make_trigger(server, poll_interval=5, deadline=deadline_at(clock.now + 5, "execution_timeout", 5))
    )

    assert payload["kind"] == "timeout"
    assert payload["message"] == (
        f"job {JOB} did not finish within execution_timeout=5 s; canceling it failed (see the log above)"
    )
    assert (payload["limit"], payload["canceled"]) == ("execution_timeout", False)
    assert len(server.cancels) == 1
    assert payload["job"]["status"] == "running"  # falls back to the last job seen


@pytest.mark.asyncio
async def test_job_finishing_before_deadline_is_not_canceled(conn, clock):
    server = FakeServer((200, job_body(JOB, "running")), (200, job_body(JOB, "succeeded")))
    payload = await only_event(make_trigger(server, poll_interval=5, deadline=deadline_at(clock.now + 60)))
    assert payload["kind"] == "ended"
    assert not server.cancels


# --------------------------------------------------------------------------------------------
# Serialisation and event payload


def test_serialize_round_trip():
    trigger = ScriptRunnerJobTrigger(
        job_id=JOB,
        scriptrunner_conn_id="sr_other",
        poll_interval=3,
        deadline=Deadline(1_800_000_123.5, "execution_timeout", 20).to_dict(),
        idle={"idle_timeout": 30, "sizes": [10, 3], "since": 1_800_000_100.0},
        cancel_on_kill=False,
        cancel_on_timeout=False,
        stream_logs=True,
        log_offsets={"stdout": 10, "stderr": 3},
        log_page_bytes=1024,
        max_consecutive_errors=4,
    )
    classpath, kwargs = trigger.serialize()

    module_name, _, class_name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert cls is ScriptRunnerJobTrigger

    restored_kwargs = json.loads(json.dumps(kwargs))
    rebuilt = cls(**restored_kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs == {
        "job_id": JOB,
        "scriptrunner_conn_id": "sr_other",
        "poll_interval": 3.0,
        "deadline": {"at": 1_800_000_123.5, "limit": "execution_timeout", "seconds": 20.0},
        "idle": {"idle_timeout": 30.0, "sizes": [10, 3], "since": 1_800_000_100.0},
        "cancel_on_kill": False,
        "cancel_on_timeout": False,
        "stream_logs": True,
        "log_offsets": {"stdout": 10, "stderr": 3},
        "log_page_bytes": 1024,
        "max_consecutive_errors": 4,
        "end_task": None,
    }
    # The rebuilt trigger holds the limits themselves, not text to parse.
    assert rebuilt.deadline == Deadline(1_800_000_123.5, "execution_timeout", 20.0)
    assert (rebuilt.idle.idle_timeout, rebuilt.idle.sizes, rebuilt.idle.since) == (
        30.0,
        (10, 3),
        1_800_000_100.0,
    )


def test_serialize_defaults_round_trip():
    classpath, kwargs = ScriptRunnerJobTrigger(job_id=JOB).serialize()
    rebuilt = ScriptRunnerJobTrigger(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)
    assert (kwargs["deadline"], kwargs["idle"]) == (None, None)
    assert (kwargs["cancel_on_kill"], kwargs["cancel_on_timeout"]) == (True, True)
    assert rebuilt.deadline is None and rebuilt.idle.idle_timeout is None


@pytest.mark.asyncio
async def test_event_payload_round_trips_through_json(conn, clock):
    body = job_body(JOB, "failed", code=3, stderrPreview="bad\n", stdoutSize=12, stdoutTruncated=True)
    payload = await only_event(make_trigger(FakeServer((200, body))))

    wire = json.loads(json.dumps(payload))
    assert wire == payload
    event = JobEvent.from_dict(wire)
    assert event.kind is EventKind.ENDED
    assert event.job_id == JOB
    assert event.job == ScriptRunnerJob.from_api(body)
    assert event.job.status is JobStatus.FAILED and event.job.exit_code == 3 and event.job.stdout_truncated
    assert event.to_dict() == payload


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("map_index", "expected_map_index"), [(2, 2), (None, -1), (-1, -1)], ids=["mapped", "none", "unmapped"]
)
async def test_every_event_names_the_try_it_was_fired_for(conn, clock, map_index, expected_map_index):
    trigger = make_trigger(FakeServer((200, job_body(JOB, "succeeded"))))
    trigger.task_instance = SimpleNamespace(
        dag_id="etl", run_id="manual__1", task_id="run", map_index=map_index, try_number=3
    )
    payload = await only_event(trigger)
    assert payload["task"] == {
        "dag_id": "etl",
        "run_id": "manual__1",
        "task_id": "run",
        "map_index": expected_map_index,
        "try_number": 3,
    }
    assert JobEvent.from_dict(json.loads(json.dumps(payload))).task == payload["task"]


@pytest.mark.asyncio
async def test_a_timeout_event_names_the_try_too(conn, clock):
    server = FakeServer((200, job_body(JOB, "running")))
    trigger = make_trigger(server, deadline=deadline_at(clock.now - 1), cancel_on_timeout=False)
    trigger.task_instance = SimpleNamespace(
        dag_id="etl", run_id="r", task_id="run", map_index=-1, try_number=2
    )
    payload = await only_event(trigger)
    assert payload["kind"] == "timeout"
    assert payload["task"] == {
        "dag_id": "etl",
        "run_id": "r",
        "task_id": "run",
        "map_index": -1,
        "try_number": 2,
    }


@pytest.mark.asyncio
async def test_an_event_without_a_task_instance_names_no_try(conn, clock):
    # As under `airflow dags test`: the trigger has no task instance.
    payload = await only_event(make_trigger(FakeServer((200, job_body(JOB, "succeeded")))))
    assert payload["task"] is None


# --------------------------------------------------------------------------------------------
# Client lifetime


@pytest.mark.asyncio
async def test_run_closes_the_client_before_yielding(conn, clock):
    trigger = make_trigger(FakeServer((200, job_body(JOB, "succeeded"))))
    backend = await trigger._hook.get_backend()
    events = trigger.run()
    event = await events.__anext__()

    assert event.payload["kind"] == "ended"
    assert backend.client.is_closed
    assert trigger._hook._backend is None
    with pytest.raises(StopAsyncIteration):
        await events.__anext__()


@pytest.mark.asyncio
async def test_cleanup_closes_the_client(conn):
    trigger = make_trigger(FakeServer((200, job_body(JOB, "running"))))
    backend = await trigger._hook.get_backend()
    await trigger.cleanup()
    assert backend.client.is_closed and trigger._hook._backend is None
    await trigger.cleanup()  # twice is harmless


@pytest.mark.asyncio
async def test_cleanup_without_hook_does_not_create_one():
    trigger = ScriptRunnerJobTrigger(job_id=JOB)
    await trigger.cleanup()
    assert trigger._hook is None


@pytest.mark.asyncio
async def test_own_hook_is_lazy_and_does_not_retry(set_connection, clock):
    # The connection asks for 5 retries; the trigger's own backoff replaces them.
    set_connection("sr_other", host="sr.test", port=8080, extra={"retries": 5})
    server = FakeServer((503, "<html>busy</html>"))
    trigger = ScriptRunnerJobTrigger(job_id=JOB, scriptrunner_conn_id="sr_other", max_consecutive_errors=1)
    assert trigger._hook is None  # nothing built before the trigger runs
    hook = trigger.hook
    assert isinstance(hook, ScriptRunnerAsyncHook) and trigger.hook is hook
    hook._transport = httpx.MockTransport(server)

    payload = await only_event(trigger)

    assert payload["kind"] == "error"
    assert len(server.gets) == 1
    assert str(server.gets[0].url) == f"http://sr.test:8080/jobs/{JOB}"


# --------------------------------------------------------------------------------------------
# Stopping the trigger: on_kill (Airflow 3.3+) and the cancellation of its task (every version)


#: The owner record of the trigger's own try (try 1, following JOB).
OWN = Owner(1, JOB)


def on_try(trigger, state, owner=OWN, try_number=1):
    """Give the trigger a task instance on ``try_number``, whose state and owner record are as given."""
    trigger.task_instance = SimpleNamespace(
        dag_id="d", task_id="run", run_id="r", map_index=-1, try_number=try_number
    )
    trigger._task_state = state_returning(state)
    trigger._owner = state_returning(owner)
    return trigger


@pytest.mark.asyncio
@pytest.mark.parametrize("state", ["failed", "success", "up_for_retry", "upstream_failed", "skipped"])
async def test_on_kill_cancels_when_the_try_ended(conn, state):
    server = FakeServer((200, job_body(JOB, "running")), cancel=(200, job_body(JOB, "running")))
    trigger = on_try(make_trigger(server), state)
    backend = await trigger._hook.get_backend()

    await trigger.on_kill()

    assert len(server.cancels) == 1
    assert backend.client.is_closed  # on_kill also releases the client


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("state", "owner", "why"),
    [
        ("deferred", OWN, "the task is still deferred (a triggerer restart or rebalance); the job goes on"),
        (
            RuntimeError("API server unreachable"),
            OWN,
            "could not read the task's state (RuntimeError: API server unreachable)",
        ),
        # Cleared: the next try has not started yet, or has started and reattached (both orders).
        (None, OWN, "the task was cleared (now None): its next try reattaches to the job"),
        ("scheduled", OWN, "the task was cleared (now scheduled): its next try reattaches to the job"),
        ("queued", OWN, "the task was cleared (now queued): its next try reattaches to the job"),
        ("running", Owner(2, JOB), "try 2 of the task follows the job now, not this trigger's try 1"),
        (
            "running",
            None,
            "a newer try of the task cleared this try's record (task running); it reattaches to the job",
        ),
        ("deferred", Owner(2, JOB), "try 2 of the task follows the job now, not this trigger's try 1"),
        ("deferred", None, "the task is still deferred (a triggerer restart or rebalance); the job goes on"),
        # A later try of the task, which followed this job, ended; the job was that try's.
        ("failed", Owner(2, JOB), "try 2 of the task follows the job now, not this trigger's try 1"),
    ],
    ids=[
        "deferred",
        "unreadable",
        "cleared",
        "cleared-scheduled",
        "cleared-queued",
        "new-try-running",
        "new-try-cleared-the-record",
        "new-try-deferred",
        "deferred-no-record",
        "new-try-failed",
    ],
)
async def test_the_job_goes_on_unless_this_try_is_over(conn, task_log, state, owner, why):
    server = FakeServer((200, job_body(JOB, "running")))
    trigger = on_try(make_trigger(server), state, owner=owner)

    await trigger.on_kill()

    assert not server.requests
    assert f"info: Not canceling job {JOB}: {why}" in task_log.text


@pytest.mark.asyncio
@pytest.mark.parametrize("state", ["deferred", "running", "failed", "success", "scheduled"])
async def test_a_newer_try_running_a_job_of_its_own_gets_this_job_canceled(conn, task_log, state):
    # Airflow 3.4 lets this trigger run on while the task, cleared, defers on try 2 with a job of
    # its own: this job has no task any more, whatever the state.
    server = FakeServer((200, job_body(JOB, "running")), cancel=(200, job_body(JOB, "running")))
    trigger = on_try(make_trigger(server), state, owner=Owner(2, OTHER_JOB))

    await trigger.on_kill()

    assert len(server.cancels) == 1 and str(server.cancels[0].url).endswith(f"/jobs/{JOB}/cancel")
    assert (
        f"Canceled job {JOB} because try 2 of the task runs job {OTHER_JOB}: job {JOB} has no task any more"
    ) in task_log.text


@pytest.mark.asyncio
async def test_airflow_ending_the_deferral_after_the_deadline_cancels(conn, clock, task_log):
    # Airflow's own trigger timeout puts the task back to SCHEDULED on the same try (to fail it).
    server = FakeServer((200, job_body(JOB, "running")), cancel=(200, job_body(JOB, "running")))
    trigger = on_try(
        make_trigger(server, deadline=deadline_at(clock.now - 1, "execution_timeout", 20)), "scheduled"
    )
    await trigger.on_kill()
    assert len(server.cancels) == 1
    assert (
        f"Canceled job {JOB} because Airflow ended the deferral after execution_timeout=20 s passed "
        "(task scheduled)"
    ) in task_log.text


@pytest.mark.asyncio
async def test_a_cleared_task_before_its_deadline_keeps_its_job(conn, clock):
    server = FakeServer((200, job_body(JOB, "running")))
    trigger = on_try(
        make_trigger(server, deadline=deadline_at(clock.now + 1, "execution_timeout", 20)), "scheduled"
    )
    assert await trigger.cancel_verdict() == CancelVerdict(
        False, "the task was cleared (now scheduled): its next try reattaches to the job"
    )


@pytest.mark.asyncio
async def test_a_state_read_that_hangs_leaves_the_job_alone(conn, monkeypatch):
    monkeypatch.setattr(trigger_module, "STATE_READ_TIMEOUT", 0.01)
    server = FakeServer((200, job_body(JOB, "running")))
    trigger = on_try(make_trigger(server), "failed")

    async def hangs():
        await _real_sleep(10)

    trigger._task_state = hangs
    assert await trigger.cancel_verdict() == CancelVerdict(
        False, "could not read the task's state (TimeoutError: )"
    )
    await trigger.on_kill()
    assert not server.requests


@pytest.mark.asyncio
@pytest.mark.parametrize(("state", "cancels"), [("failed", 1), ("deferred", 0), ("scheduled", 0)])
async def test_an_unreadable_owner_record_leaves_the_decision_to_the_state(conn, task_log, state, cancels):
    server = FakeServer((200, job_body(JOB, "running")), cancel=(200, job_body(JOB, "running")))
    trigger = on_try(make_trigger(server), state, owner=RuntimeError("no XCom"))
    await trigger.on_kill()
    assert len(server.cancels) == cancels
    assert f"Could not read which try owns job {JOB} (no XCom); deciding by the task's state" in task_log.text


@pytest.mark.asyncio
async def test_a_try_of_unknown_number_decides_by_the_state(conn):
    trigger = on_try(make_trigger(FakeServer((200, job_body(JOB, "running")))), "failed", owner=OSError("x"))
    del trigger.task_instance.try_number
    assert await trigger.cancel_verdict() == CancelVerdict(True, "the task is failed: its try None is over")


@pytest.mark.asyncio
async def test_an_owner_read_that_hangs_leaves_the_decision_to_the_state(conn, monkeypatch):
    monkeypatch.setattr(trigger_module, "STATE_READ_TIMEOUT", 0.01)
    trigger = on_try(make_trigger(FakeServer((200, job_body(JOB, "running")))), "failed")

    async def hangs():
        await _real_sleep(10)

    trigger._owner = hangs
    assert await trigger.cancel_verdict() == CancelVerdict(True, "the task is failed: its try 1 is over")


@pytest.mark.asyncio
async def test_on_kill_respects_cancel_on_kill_false(conn):
    server = FakeServer((200, job_body(JOB, "running")))
    trigger = on_try(make_trigger(server, cancel_on_kill=False), "failed")

    await trigger.on_kill()

    assert not server.requests


@pytest.mark.asyncio
async def test_on_kill_survives_a_failed_cancel(conn):
    server = FakeServer((200, job_body(JOB, "running")), cancel=NOT_FOUND)
    trigger = on_try(make_trigger(server), "failed")

    await trigger.on_kill()  # does not raise

    assert len(server.cancels) == 1


@pytest.mark.asyncio
async def test_no_cancel_without_task_instance():
    trigger = ScriptRunnerJobTrigger(job_id=JOB)
    assert trigger.task_instance is None  # as under `airflow dags test`
    assert await trigger.cancel_verdict() == CancelVerdict(
        False,
        "could not read the task's state "
        "(LookupError: the trigger has no task instance (e.g. under `airflow dags test`))",
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("map_index", "states", "owner", "expected_map_index", "cancel"),
    [
        (-1, {"run_1": {"watch": "deferred"}}, {"try": 4, "job_id": JOB}, -1, False),
        (-1, {"run_1": {"watch": "failed"}}, {"try": 4, "job_id": JOB}, -1, True),
        (2, {"run_1": {"watch_2": "deferred", "watch_3": "failed"}}, {"try": 4, "job_id": JOB}, 2, False),
        (3, {"run_1": {"watch_2": "deferred", "watch_3": "failed"}}, {"try": 4, "job_id": JOB}, 3, True),
        (None, {"run_1": {"watch": "success"}}, {"try": 4, "job_id": JOB}, -1, True),
        # Read while DEFERRED too: a newer try deferred with a job of its own.
        (-1, {"run_1": {"watch": "deferred"}}, {"try": 5, "job_id": OTHER_JOB}, -1, True),
        (-1, {"run_1": {"watch": "failed"}}, {"try": 5, "job_id": JOB}, -1, False),
    ],
    ids=[
        "unmapped-deferred",
        "unmapped-failed",
        "mapped-deferred",
        "mapped-failed",
        "no-map-index",
        "deferred-on-a-newer-try-with-its-own-job",
        "newer-try-follows-the-job",
    ],
)
async def test_cancel_verdict_reads_the_task_state_and_owner(
    monkeypatch, map_index, states, owner, expected_map_index, cancel
):
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from airflow_provider_scriptrunner._compat import XCom

    state_calls, xcom_calls = [], []

    def get_task_states(**kwargs):
        state_calls.append(kwargs)
        return states

    def get_one(**kwargs):
        xcom_calls.append(kwargs)
        return owner

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(get_task_states))
    monkeypatch.setattr(XCom, "get_one", staticmethod(get_one))
    trigger = ScriptRunnerJobTrigger(job_id=JOB)
    trigger.task_instance = SimpleNamespace(
        dag_id="dag_a", task_id="watch", run_id="run_1", map_index=map_index, try_number=4
    )

    assert (await trigger.cancel_verdict()).cancel is cancel
    assert state_calls == [
        {"dag_id": "dag_a", "task_ids": ["watch"], "run_ids": ["run_1"], "map_index": expected_map_index}
    ]
    assert xcom_calls == [
        {
            "key": "scriptrunner_owner",
            "dag_id": "dag_a",
            "task_id": "watch",
            "run_id": "run_1",
            "map_index": expected_map_index,
        }
    ]


async def _start_and_cancel(trigger: ScriptRunnerJobTrigger, server: FakeServer) -> None:
    task = asyncio.create_task(run_all(trigger))
    for _ in range(2000):
        if server.gets:
            break
        await _real_sleep(0.001)
    assert server.gets, "the trigger never polled"
    await _real_sleep(0.01)  # let it settle into its (real, long) pause between polls
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("state", "cancel_on_kill", "expect_cancel"),
    [
        ("failed", True, True),
        ("success", True, True),
        (None, True, False),
        ("deferred", True, False),
        (RuntimeError("API server unreachable"), True, False),
        ("failed", False, False),
    ],
    ids=["failed", "success", "cleared", "deferred", "unreadable", "cancel_on_kill-false"],
)
async def test_cancellation_of_the_trigger_decides_on_every_version(
    conn, state, cancel_on_kill, expect_cancel
):
    # Airflow 3.1/3.2 only cancel the trigger's task; 3.3 does too, and on its own trigger timeout
    # does nothing else (no on_kill).
    server = FakeServer((200, job_body(JOB, "running")), cancel=(200, job_body(JOB, "running")))
    trigger = on_try(make_trigger(server, poll_interval=30, cancel_on_kill=cancel_on_kill), state)

    await _start_and_cancel(trigger, server)

    assert len(server.cancels) == (1 if expect_cancel else 0)
    assert len(server.gets) == 1


@pytest.mark.asyncio
async def test_on_kill_after_the_cancellation_does_not_cancel_again(conn):
    # Airflow 3.3 cancels the trigger's task, then calls on_kill: one cancel per job and reason.
    server = FakeServer((200, job_body(JOB, "running")), cancel=(200, job_body(JOB, "running")))
    trigger = on_try(make_trigger(server, poll_interval=30), "failed")

    await _start_and_cancel(trigger, server)
    await trigger.on_kill()

    assert len(server.cancels) == 1


# --------------------------------------------------------------------------------------------
# Constructor validation


@pytest.mark.parametrize("poll_interval", [0, -1, -0.5])
def test_rejects_non_positive_poll_interval(poll_interval):
    with pytest.raises(ValueError, match="poll_interval"):
        ScriptRunnerJobTrigger(job_id=JOB, poll_interval=poll_interval)


@pytest.mark.parametrize("max_consecutive_errors", [0, -3])
def test_rejects_max_consecutive_errors_below_one(max_consecutive_errors):
    with pytest.raises(ValueError, match="max_consecutive_errors"):
        ScriptRunnerJobTrigger(job_id=JOB, max_consecutive_errors=max_consecutive_errors)


@pytest.mark.asyncio
async def test_the_smallest_valid_values_work(conn, clock):
    # One failed poll is enough to give up; a 10 ms poll interval is kept as given.
    server = FakeServer((200, job_body(JOB, "running")), (503, "<html>busy</html>"))
    payload = await only_event(make_trigger(server, poll_interval=0.01, max_consecutive_errors=1))

    assert payload["kind"] == "error"
    assert payload["message"].startswith(f"gave up following job {JOB} after 1 failed polls in a row: ")
    assert len(server.gets) == 2
    assert clock.sleeps == [pytest.approx(0.01)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"deadline": "execution_timeout=20 s"}, "deadline must be a dict"),
        ({"deadline": {"at": 1_800_000_000.0, "limit": "timeout"}}, "deadline"),
        ({"idle": 30}, "idle must be a dict"),
        ({"idle": {"idle_timeout": -1}}, "idle_timeout must be a positive number"),
        ({"log_offsets": {"both": 3}}, "log_offsets must map 'stdout'/'stderr'"),
        ({"log_offsets": {"stdout": -1}}, r"log_offsets\['stdout'\]"),
        ({"log_page_bytes": 0}, "log_page_bytes"),
        ({"job_id": ".."}, "is not a job id"),
        ({"scriptrunner_conn_id": " "}, "scriptrunner_conn_id"),
    ],
    ids=[
        "deadline-text",
        "deadline-incomplete",
        "idle-number",
        "idle-negative",
        "offsets-unknown-stream",
        "offsets-negative",
        "page-zero",
        "job-id",
        "conn-id",
    ],
)
def test_rejects_bad_arguments_before_deferring(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScriptRunnerJobTrigger(**{"job_id": JOB, **kwargs})


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "state", "sleeps"),
    [
        # Someone canceled the job and ended the task (a mark while no trigger ran): the trigger
        # waits to be stopped before it fires, so that its event, should its trigger id have gone
        # to another task's deferral meanwhile, does not reach that task right as it defers.
        ("canceled", "failed", [30.0]),
        ("canceled", "success", [30.0]),
        # The task still waits for this job: its end is reported at once.
        ("canceled", "deferred", []),
        ("succeeded", "failed", []),
        ("canceled", LookupError("no task instance"), []),
    ],
)
async def test_a_job_canceled_for_an_ended_task_is_reported_only_after_a_grace(
    conn, clock, status, state, sleeps
):
    server = FakeServer((200, job_body(JOB, status)))
    trigger = make_trigger(server)
    trigger.task_instance = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=1)
    trigger._task_state = state_returning(state)
    payload = await only_event(trigger)
    assert (payload["kind"], payload["job"]["status"]) == ("ended", status)
    assert clock.sleeps == sleeps
    assert trigger_module.STALE_EVENT_GRACE == 30.0


@pytest.mark.asyncio
async def test_without_a_task_instance_a_canceled_job_is_reported_at_once(conn, clock):
    payload = await only_event(make_trigger(FakeServer((200, job_body(JOB, "canceled")))))
    assert payload["kind"] == "ended" and clock.sleeps == []
