"""ScriptRunnerJobSensor: poke, poke-mode execute, deferrable execute and execute_complete (requests-mock)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest
from airflow.sdk import PokeReturnValue
from airflow.sdk.bases import sensor as sensor_base

from airflow_provider_scriptrunner._compat import AirflowFailException, AirflowSensorTimeout, TaskDeferred
from airflow_provider_scriptrunner.client.errors import ScriptRunnerError
from airflow_provider_scriptrunner.client.models import ScriptRunnerJob
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerAsyncHook
from airflow_provider_scriptrunner.sensors.scriptrunner import ScriptRunnerJobSensor
from airflow_provider_scriptrunner.task.limits import Deadline
from airflow_provider_scriptrunner.task.outcome import EventKind, JobEvent
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger
from tests.conftest import BASE_URL, job_body

JOB = "job_1795342284509_3"
JOB_URL = f"{BASE_URL}/jobs/{JOB}"
#: How the failure messages name the job of job_body() (script "quick-echo").
NAME = f"script 'quick-echo' (job {JOB})"
NOT_FOUND = {
    "status_code": 404,
    "json": {"ok": False, "error": {"code": "JOB_NOT_FOUND", "message": f"job not found: {JOB}"}},
}

#: (job body, a part of the failure message to match, the whole failure message)
FAILED_BODIES = [
    pytest.param(
        job_body(JOB, "failed", code=3, stderrPreview="boom: disk full\n"),
        "failed with exit code 3",
        f"{NAME} failed with exit code 3. End of stderr:\nboom: disk full",
        id="failed-3",
    ),
    pytest.param(
        job_body(JOB, "timed_out"),
        "timed out",
        f"{NAME} timed out: the server's script timeout (timeoutSec in its scripts.json) fired and stopped it",
        id="timed_out",
    ),
    pytest.param(
        job_body(JOB, "canceled"),
        "was canceled on the server",
        f"{NAME} was canceled on the server",
        id="canceled",
    ),
    pytest.param(
        job_body(JOB, "failed", code=-1),
        "ended with code -1",
        f"{NAME} ended with code -1: the script was killed by a signal, or lost when the script-runner "
        "server restarted (the server reports both the same way)",
        id="failed-minus-1",
    ),
]


def make_sensor(**kwargs) -> ScriptRunnerJobSensor:
    kwargs.setdefault("task_id", "wait_for_job")
    kwargs.setdefault("job_id", JOB)
    kwargs.setdefault("deferrable", False)
    return ScriptRunnerJobSensor(**kwargs)


def answer(*bodies) -> list[dict]:
    return [{"json": body} for body in bodies]


def assert_never_canceled(requests_mock) -> None:
    assert requests_mock.request_history, "the sensor never talked to the server"
    assert all(r.method == "GET" for r in requests_mock.request_history)


@pytest.fixture
def no_sleep(monkeypatch):
    """Record BaseSensorOperator's pauses between pokes instead of sleeping."""
    pauses: list[float] = []
    monkeypatch.setattr(sensor_base, "time", SimpleNamespace(sleep=pauses.append, monotonic=time.monotonic))
    return pauses


# --------------------------------------------------------------------------------------------
# poke()


@pytest.mark.parametrize("status", ["queued", "running"])
def test_poke_not_done_while_job_in_progress(conn, requests_mock, status):
    requests_mock.get(JOB_URL, json=job_body(JOB, status))
    result = make_sensor().poke({})

    assert isinstance(result, PokeReturnValue)
    assert result.is_done is False
    assert not result
    assert requests_mock.call_count == 1
    assert_never_canceled(requests_mock)


def test_poke_done_with_job_dict_on_success(conn, requests_mock):
    body = job_body(JOB, "succeeded", stdoutPreview="hello\n", stdoutSize=6)
    requests_mock.get(JOB_URL, json=body)
    result = make_sensor().poke({})

    assert result.is_done is True
    assert result.xcom_value == ScriptRunnerJob.from_api(body).to_dict()
    assert result.xcom_value["status"] == "succeeded"
    assert result.xcom_value["job_id"] == JOB
    assert result.xcom_value["stdout_preview"] == "hello\n"
    assert json.loads(json.dumps(result.xcom_value)) == result.xcom_value  # XCom-safe
    assert_never_canceled(requests_mock)


@pytest.mark.parametrize(("body", "reason", "message"), FAILED_BODIES)
def test_poke_fails_without_retry_on_unsuccessful_end(conn, requests_mock, body, reason, message):
    requests_mock.get(JOB_URL, json=body)
    with pytest.raises(AirflowFailException) as excinfo:
        make_sensor().poke({})

    assert reason in str(excinfo.value)
    assert str(excinfo.value) == message
    assert_never_canceled(requests_mock)


def test_poke_job_not_found_fails_without_retry(conn, requests_mock):
    requests_mock.get(JOB_URL, **NOT_FOUND)
    with pytest.raises(AirflowFailException, match="JOB_NOT_FOUND"):
        make_sensor().poke({})
    assert requests_mock.call_count == 1  # 404 is not retried
    assert_never_canceled(requests_mock)


def test_poke_transient_error_is_an_ordinary_failure(conn, requests_mock, set_connection):
    set_connection(host="sr.test", port=8080, extra={"retries": 1})
    requests_mock.get(JOB_URL, status_code=503, text="<html>busy</html>")
    with pytest.raises(ScriptRunnerError) as excinfo:
        make_sensor().poke({})
    assert not isinstance(excinfo.value, AirflowFailException)  # task retries apply
    assert requests_mock.call_count == 2  # the hook's own retry
    assert_never_canceled(requests_mock)


def test_poke_uses_the_given_connection(set_connection, requests_mock):
    set_connection("sr_other", host="other.test", port=9090)
    requests_mock.get(f"http://other.test:9090/jobs/{JOB}", json=job_body(JOB, "running"))
    assert make_sensor(scriptrunner_conn_id="sr_other").poke({}).is_done is False


# --------------------------------------------------------------------------------------------
# execute() in poke mode (BaseSensorOperator's loop)


def test_poke_mode_execute_waits_until_success(conn, requests_mock, no_sleep):
    bodies = [job_body(JOB, "queued", startedAt=None), job_body(JOB, "running"), job_body(JOB, "succeeded")]
    requests_mock.get(JOB_URL, answer(*bodies))

    result = make_sensor(poke_interval=4).execute({})

    assert result == ScriptRunnerJob.from_api(bodies[-1]).to_dict()
    assert requests_mock.call_count == 3
    assert no_sleep == [4, 4]
    assert_never_canceled(requests_mock)


@pytest.mark.parametrize(("body", "reason", "message"), FAILED_BODIES)
def test_poke_mode_execute_fails_on_unsuccessful_end(conn, requests_mock, no_sleep, body, reason, message):
    requests_mock.get(JOB_URL, answer(job_body(JOB, "running"), body))
    with pytest.raises(AirflowFailException, match=reason):
        make_sensor(poke_interval=4).execute({})
    assert requests_mock.call_count == 2
    assert_never_canceled(requests_mock)


def test_poke_mode_timeout_does_not_cancel(conn, requests_mock, no_sleep):
    requests_mock.get(JOB_URL, json=job_body(JOB, "running"))
    with pytest.raises(AirflowSensorTimeout):
        make_sensor(poke_interval=0, timeout=0).execute({})
    assert_never_canceled(requests_mock)


def test_poke_mode_soft_fail_skips_on_failed_job(conn, requests_mock, no_sleep):
    from airflow_provider_scriptrunner._compat import AirflowSkipException

    requests_mock.get(JOB_URL, json=job_body(JOB, "failed", code=2))
    with pytest.raises(AirflowSkipException):
        make_sensor(soft_fail=True).execute({})


def test_reschedule_mode_reschedules_while_running(conn, requests_mock):
    requests_mock.get(JOB_URL, json=job_body(JOB, "running"))
    ti = SimpleNamespace(get_first_reschedule_date=lambda context: None)
    with pytest.raises(sensor_base.AirflowRescheduleException):
        make_sensor(mode="reschedule", poke_interval=30).execute({"ti": ti})
    assert requests_mock.call_count == 1
    assert_never_canceled(requests_mock)


def test_on_kill_does_not_cancel(conn, requests_mock):
    make_sensor().on_kill()
    assert requests_mock.request_history == []


# --------------------------------------------------------------------------------------------
# execute() in deferrable mode


def test_deferrable_returns_at_once_when_already_succeeded(conn, requests_mock):
    body = job_body(JOB, "succeeded")
    requests_mock.get(JOB_URL, json=body)

    result = make_sensor(deferrable=True).execute({})  # no TaskDeferred

    assert result == ScriptRunnerJob.from_api(body).to_dict()
    assert requests_mock.call_count == 1


@pytest.mark.parametrize(("body", "reason", "message"), FAILED_BODIES)
def test_deferrable_fails_at_once_when_already_ended_badly(conn, requests_mock, body, reason, message):
    requests_mock.get(JOB_URL, json=body)
    with pytest.raises(AirflowFailException, match=reason) as excinfo:
        make_sensor(deferrable=True).execute({})
    assert str(excinfo.value) == message
    assert_never_canceled(requests_mock)


def test_deferrable_job_not_found_fails_without_deferring(conn, requests_mock):
    requests_mock.get(JOB_URL, **NOT_FOUND)
    with pytest.raises(AirflowFailException, match="JOB_NOT_FOUND"):
        make_sensor(deferrable=True).execute({})


@pytest.mark.parametrize("flag", ["soft_fail", "never_fail"])
def test_deferrable_soft_fail_skips_when_job_already_failed(conn, requests_mock, flag):
    from airflow_provider_scriptrunner._compat import AirflowSkipException

    requests_mock.get(JOB_URL, json=job_body(JOB, "failed", code=2))
    with pytest.raises(AirflowSkipException):
        make_sensor(deferrable=True, **{flag: True}).execute({})


@pytest.mark.parametrize("timeout", [300, timedelta(minutes=5)], ids=["seconds", "timedelta"])
def test_deferrable_defers_a_watch_only_trigger(conn, requests_mock, timeout):
    requests_mock.get(JOB_URL, json=job_body(JOB, "running"))
    sensor = make_sensor(
        deferrable=True, poke_interval=7, timeout=timeout, scriptrunner_conn_id="scriptrunner_default"
    )

    before = time.time()
    with pytest.raises(TaskDeferred) as excinfo:
        sensor.execute({})
    after = time.time()

    deferred = excinfo.value
    trigger = deferred.trigger
    assert isinstance(trigger, ScriptRunnerJobTrigger)
    assert deferred.method_name == "execute_complete"
    assert trigger.job_id == JOB
    assert trigger.scriptrunner_conn_id == "scriptrunner_default"
    assert trigger.poll_interval == 7.0 == sensor.poke_interval
    assert trigger.cancel_on_kill is False
    assert trigger.cancel_on_timeout is False
    assert (trigger.deadline.limit, trigger.deadline.seconds) == ("timeout", 300.0)
    assert before + 300 <= trigger.deadline.at <= after + 300
    assert_never_canceled(requests_mock)


# --------------------------------------------------------------------------------------------
# execute_complete()


def _event(kind: str, body: dict | None = None, **kwargs) -> dict:
    job = ScriptRunnerJob.from_api(body) if body else None
    payload = JobEvent(
        EventKind(kind), kwargs.pop("message", f"{kind} message"), JOB, job, **kwargs
    ).to_dict()
    return json.loads(json.dumps(payload))  # as it arrives from the triggerer


def test_execute_complete_success_returns_job_dict(conn):
    body = job_body(JOB, "succeeded", stdoutPreview="out\n")
    result = make_sensor().execute_complete({}, _event("ended", body))
    assert result == ScriptRunnerJob.from_api(body).to_dict()
    assert result["status"] == "succeeded" and result["stdout_preview"] == "out\n"


@pytest.mark.parametrize(("body", "reason", "message"), FAILED_BODIES)
def test_execute_complete_failure_fails_without_retry(conn, body, reason, message):
    # The sensor judges the job the event carries, as poke() does.
    with pytest.raises(AirflowFailException, match=reason) as excinfo:
        make_sensor().execute_complete({}, _event("ended", body, message=f"job {JOB} ended"))
    assert str(excinfo.value) == message


def test_execute_complete_timeout_raises_sensor_timeout(conn):
    with pytest.raises(AirflowSensorTimeout, match=JOB):
        make_sensor().execute_complete({}, _event("timeout", job_body(JOB, "running")))


def test_execute_complete_job_not_found_fails_without_retry(conn):
    event = _event("error", message="job is unknown (JOB_NOT_FOUND)", error_code="JOB_NOT_FOUND")
    with pytest.raises(AirflowFailException, match="JOB_NOT_FOUND"):
        make_sensor().execute_complete({}, event)


def test_execute_complete_other_error_leaves_retries_to_airflow(conn):
    event = _event("error", job_body(JOB, "running"), message="gave up after 8 failed polls in a row")
    with pytest.raises(ScriptRunnerError, match="8 failed polls") as excinfo:
        make_sensor().execute_complete({}, event)
    assert not isinstance(excinfo.value, AirflowFailException)
    assert not isinstance(excinfo.value, AirflowSensorTimeout)


def test_resume_execution_soft_fail_skips_a_failure_event(conn):
    from airflow_provider_scriptrunner._compat import AirflowSkipException

    event = _event("ended", job_body(JOB, "failed", code=2))
    with pytest.raises(AirflowSkipException):
        make_sensor(soft_fail=True).resume_execution("execute_complete", {"event": event}, {})
    with pytest.raises(AirflowFailException):
        make_sensor().resume_execution("execute_complete", {"event": event}, {})


def test_execute_complete_ended_event_without_job_does_not_succeed(conn):
    with pytest.raises(AirflowFailException, match=f"^job {JOB}: job ended badly$"):
        make_sensor().execute_complete({}, _event("ended", None, message="job ended badly"))


# --------------------------------------------------------------------------------------------
# execute_complete() with the event of another try's trigger (a trigger id reused on SQLite)


def sensor_ti(try_number=2, **ids):
    return SimpleNamespace(
        **{"dag_id": "etl", "run_id": "manual__1", "task_id": "wait_for_job", "map_index": -1, **ids},
        try_number=try_number,
        start_date=None,
    )


def task_key(try_number=2, **ids):
    """An event's ``task``: the try of the task instance its trigger was fired for."""
    ids = {"dag_id": "etl", "run_id": "manual__1", "task_id": "wait_for_job", "map_index": -1, **ids}
    return {**ids, "try_number": try_number}


@pytest.mark.parametrize(
    "key",
    [task_key(try_number=1), task_key(task_id="other_sensor"), task_key(map_index=3)],
    ids=["other-try", "other-task", "other-map-index"],
)
def test_execute_complete_waits_again_after_another_tries_event(conn, requests_mock, task_log, key):
    # The event says the job failed; this try's own reading of the job says it runs: wait again.
    requests_mock.get(JOB_URL, json=job_body(JOB, "running"))
    event = _event("ended", job_body(JOB, "failed", code=3), task=key)
    with pytest.raises(TaskDeferred) as excinfo:
        make_sensor(deferrable=True, poke_interval=7).execute_complete({"ti": sensor_ti()}, event)
    trigger = excinfo.value.trigger
    assert (trigger.job_id, trigger.poll_interval, trigger.cancel_on_kill) == (JOB, 7.0, False)
    assert excinfo.value.method_name == "execute_complete"
    assert f"Ignoring the event of another try's trigger ({key}); waiting again" in task_log.text
    assert_never_canceled(requests_mock)


def test_execute_complete_after_another_tries_event_judges_the_job_itself(conn, requests_mock):
    body = job_body(JOB, "succeeded", stdoutPreview="out\n")
    requests_mock.get(JOB_URL, json=body)
    event = _event("ended", job_body(JOB, "failed", code=3), task=task_key(try_number=1))
    result = make_sensor(deferrable=True).execute_complete({"ti": sensor_ti()}, event)
    assert result == ScriptRunnerJob.from_api(body).to_dict()
    assert [r.method for r in requests_mock.request_history] == ["GET"]


@pytest.mark.parametrize("task", [task_key(), None], ids=["this-try", "no-task"])
def test_execute_complete_takes_the_event_of_its_own_try(conn, requests_mock, task):
    event = _event("ended", job_body(JOB, "failed", code=3), task=task)
    with pytest.raises(AirflowFailException, match="failed with exit code 3"):
        make_sensor(deferrable=True).execute_complete({"ti": sensor_ti()}, event)
    assert requests_mock.call_count == 0  # the event's job is judged, not read again


# --------------------------------------------------------------------------------------------
# The deferred path end to end: the sensor's own trigger, run against a fake server


class _Server:
    """An httpx handler for one job: GETs answer from `polls` (the last repeats); any other request is recorded."""

    def __init__(self, *polls):
        self.polls = list(polls)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method != "GET":
            return httpx.Response(200, json=job_body(JOB, "canceled"))
        body = self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]
        return httpx.Response(200, json=body)


def _deferred_trigger(
    requests_mock, server: _Server, **sensor_kwargs
) -> tuple[ScriptRunnerJobSensor, ScriptRunnerJobTrigger]:
    requests_mock.get(JOB_URL, json=job_body(JOB, "running"))
    sensor = make_sensor(deferrable=True, **sensor_kwargs)
    with pytest.raises(TaskDeferred) as excinfo:
        sensor.execute({})
    trigger = excinfo.value.trigger
    _, kwargs = trigger.serialize()  # what the triggerer rebuilds the trigger from
    trigger = ScriptRunnerJobTrigger(**json.loads(json.dumps(kwargs)))
    trigger._hook = ScriptRunnerAsyncHook(retries=0, transport=httpx.MockTransport(server))
    return sensor, trigger


async def _events(trigger):
    return [event async for event in trigger.run()]


@pytest.mark.asyncio
async def test_deferred_path_success_matches_poke_path(conn, requests_mock):
    final = job_body(JOB, "succeeded", stdoutPreview="done\n")
    server = _Server(job_body(JOB, "running"), final)
    sensor, trigger = _deferred_trigger(requests_mock, server, poke_interval=0.01)

    (event,) = await _events(trigger)
    result = sensor.execute_complete({}, json.loads(json.dumps(event.payload)))

    assert len(server.requests) == 2
    requests_mock.get(JOB_URL, json=final)
    assert result == make_sensor().poke({}).xcom_value
    assert all(r.method == "GET" for r in server.requests)


@pytest.mark.asyncio
async def test_deferred_path_failure_fails_the_sensor(conn, requests_mock):
    body = job_body(JOB, "failed", code=3, stderrPreview="boom\n")
    sensor, trigger = _deferred_trigger(requests_mock, _Server(body))

    (event,) = await _events(trigger)
    with pytest.raises(AirflowFailException, match="exit code 3"):
        sensor.execute_complete({}, json.loads(json.dumps(event.payload)))


@pytest.mark.asyncio
async def test_deferred_path_timeout_never_cancels(conn, requests_mock, monkeypatch):
    server = _Server(job_body(JOB, "running"))
    sensor, trigger = _deferred_trigger(requests_mock, server, timeout=60)
    trigger.deadline = Deadline(time.time() - 1, "timeout", 60.0)  # the sensor's timeout has passed

    (event,) = await _events(trigger)
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete({}, json.loads(json.dumps(event.payload)))

    async def task_failed():
        return "failed"

    monkeypatch.setattr(trigger, "_task_state", task_failed)
    await trigger.on_kill()  # a user marked the deferred sensor failed
    assert all(r.method == "GET" for r in server.requests)


# --------------------------------------------------------------------------------------------
# Construction


def test_job_id_is_templated(conn):
    assert "job_id" in ScriptRunnerJobSensor.template_fields
    sensor = make_sensor(job_id="{{ submitted }}")
    sensor.render_template_fields({"submitted": JOB})
    assert sensor.job_id == JOB


def test_by_default_it_pokes_the_default_connection_every_10_s(conn, requests_mock, no_sleep):
    # `conn` defines scriptrunner_default only: any other connection id would fail to resolve.
    requests_mock.get(JOB_URL, answer(job_body(JOB, "running"), job_body(JOB, "succeeded")))
    result = ScriptRunnerJobSensor(task_id="t", job_id=JOB, deferrable=False).execute({})
    assert result["status"] == "succeeded"
    assert [r.url for r in requests_mock.request_history] == [JOB_URL] * 2
    assert no_sleep == [10.0]


def test_hook_is_not_built_at_construction(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT", raising=False)
    sensor = make_sensor()  # no connection defined: parsing a DAG must still work
    assert "hook" not in sensor.__dict__


def test_default_deferrable_comes_from_config(conn, requests_mock, no_sleep, monkeypatch):
    # Airflow's own config, set the way a deployment sets it.
    requests_mock.get(JOB_URL, answer(job_body(JOB, "running"), job_body(JOB, "succeeded")))
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    sensor = ScriptRunnerJobSensor(task_id="t", job_id=JOB)
    assert sensor.deferrable is True
    with pytest.raises(TaskDeferred):
        sensor.execute({})

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    sensor = ScriptRunnerJobSensor(task_id="t", job_id=JOB)
    assert sensor.deferrable is False
    assert sensor.execute({})["status"] == "succeeded"  # poked on the worker until the job ended


def test_explicit_deferrable_beats_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "true")
    assert ScriptRunnerJobSensor(task_id="t", job_id=JOB, deferrable=False).deferrable is False
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "false")
    assert ScriptRunnerJobSensor(task_id="t", job_id=JOB, deferrable=True).deferrable is True


# --------------------------------------------------------------------------------------------
# Limits while deferred, and following the job's output


def test_deferred_deadline_is_the_earlier_of_timeout_and_execution_timeout_from_the_try_start(
    conn, requests_mock
):
    from datetime import datetime, timezone

    requests_mock.get(JOB_URL, json=job_body(JOB, "running"))
    start = datetime.now(timezone.utc) - timedelta(seconds=5)
    sensor = make_sensor(deferrable=True, timeout=600, execution_timeout=timedelta(seconds=30))
    with pytest.raises(TaskDeferred) as excinfo:
        sensor.execute({"ti": SimpleNamespace(start_date=start)})
    trigger = excinfo.value.trigger
    assert trigger.deadline.at == pytest.approx(start.timestamp() + 30)
    assert (trigger.deadline.limit, trigger.deadline.seconds) == ("execution_timeout", 30.0)
    assert trigger.deadline.describe() == "execution_timeout=30 s"
    assert (trigger.cancel_on_kill, trigger.cancel_on_timeout) == (False, False)


def test_execute_complete_execution_timeout_raises_task_timeout(conn):
    from airflow_provider_scriptrunner._compat import AirflowTaskTimeout

    event = _event(
        "timeout",
        job_body(JOB, "running"),
        limit="execution_timeout",
        message=f"job {JOB} did not finish within execution_timeout=30 s",
    )
    with pytest.raises(AirflowTaskTimeout, match=r"execution_timeout=30 s.*the sensor only watches"):
        make_sensor().execute_complete({}, event)


def test_stream_logs_is_off_by_default(conn, requests_mock, task_log):
    requests_mock.get(JOB_URL, json=job_body(JOB, "succeeded", stdoutSize=3))
    make_sensor().poke({})
    assert not [r for r in requests_mock.request_history if r.path.endswith("/logs")]


def test_poke_mode_follows_the_output_live(conn, requests_mock, task_log):
    from tests.conftest import log_page_callback

    requests_mock.get(
        JOB_URL,
        [
            {"json": job_body(JOB, "running", stdoutSize=4)},
            {"json": job_body(JOB, "succeeded", stdoutSize=8)},
        ],
    )
    sensor = make_sensor(stream_logs=True, mode="poke")
    requests_mock.get(f"{JOB_URL}/logs", json=log_page_callback({"stdout": b"one\n"}))  # written so far
    assert sensor.poke({}).is_done is False
    assert "[stdout] one" in task_log.text and "[stdout] two" not in task_log.text
    requests_mock.get(f"{JOB_URL}/logs", json=log_page_callback({"stdout": b"one\ntwo\n"}))
    assert sensor.poke({}).is_done is True
    assert task_log.text.count("[stdout] one") == 1 and task_log.text.count("[stdout] two") == 1


def test_reschedule_mode_writes_the_output_once_when_the_job_ended(conn, requests_mock, task_log):
    from tests.conftest import log_page_callback

    requests_mock.get(f"{JOB_URL}/logs", json=log_page_callback({"stdout": b"one\ntwo\n"}))
    requests_mock.get(
        JOB_URL,
        [
            {"json": job_body(JOB, "running", stdoutSize=4)},
            {"json": job_body(JOB, "succeeded", stdoutSize=8)},
        ],
    )
    # Each reschedule poke is a new process (a new sensor): only the one that sees the end logs.
    make_sensor(stream_logs=True, mode="reschedule").poke({})
    assert "[stdout]" not in task_log.text
    make_sensor(stream_logs=True, mode="reschedule").poke({})
    assert task_log.text.count("[stdout] one") == 1 and task_log.text.count("[stdout] two") == 1


def test_execute_complete_logs_only_what_the_trigger_did_not(conn, requests_mock, task_log):
    from tests.conftest import log_page_callback

    requests_mock.get(f"{JOB_URL}/logs", json=log_page_callback({"stdout": b"seen\nnew\n", "stderr": b""}))
    event = _event("ended", job_body(JOB, "succeeded", stdoutSize=9), log_offsets={"stdout": 5, "stderr": 0})
    assert make_sensor(stream_logs=True).execute_complete({}, event)["status"] == "succeeded"
    assert "[stdout] new" in task_log.text and "[stdout] seen" not in task_log.text
    assert_never_canceled(requests_mock)


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_job_id_no_retry_can_fix_fails_without_retries(conn, requests_mock, no_sleep, deferrable):
    with pytest.raises(AirflowFailException, match=r"job_id is empty: pass the job id returned"):
        make_sensor(job_id=" ", deferrable=deferrable).execute({})
    assert requests_mock.call_count == 0


def test_a_bad_connection_keeps_the_retries(monkeypatch, requests_mock, no_sleep):
    # Fixable in Airflow before the next try: not a reason to give up at once.
    monkeypatch.setenv("AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT", '{"conn_type": "scriptrunner", "host": ""}')
    with pytest.raises(ScriptRunnerError, match="the script-runner connection has no host") as info:
        make_sensor().execute({})
    assert not isinstance(info.value, AirflowFailException)
