"""The listener that cancels a deferred task's job when a user ends the task before its trigger ran."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from airflow_provider_scriptrunner import listener
from airflow_provider_scriptrunner._compat import TaskDeferred
from airflow_provider_scriptrunner.sensors.scriptrunner import ScriptRunnerJobSensor
from airflow_provider_scriptrunner.task.limits import Deadline
from airflow_provider_scriptrunner.task.ownership import CancelVerdict, Owner
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger
from tests.conftest import BASE_URL, job_body

JOB = "job_7_1"


def db_task_instance(trigger: ScriptRunnerJobTrigger | None = None, classpath: str | None = None, **ti):
    """The api-server's task instance of a deferred task: its trigger row holds the serialized trigger."""
    trigger = trigger or ScriptRunnerJobTrigger(job_id=JOB)
    path, kwargs = trigger.serialize()
    row = SimpleNamespace(classpath=classpath or path, kwargs=json.loads(json.dumps(kwargs)))
    return SimpleNamespace(trigger=row, **{"try_number": 1, **ti})


def test_the_classpath_is_the_one_triggers_are_stored_under():
    classpath, _ = ScriptRunnerJobTrigger(job_id=JOB).serialize()
    assert classpath == listener.TRIGGER_CLASSPATH


def test_marking_a_deferred_task_failed_cancels_its_job(conn, requests_mock, caplog):
    requests_mock.post(f"{BASE_URL}/jobs/{JOB}/cancel", json=job_body(JOB, "running"))
    listener.on_task_instance_failed(previous_state=None, task_instance=db_task_instance(), error="marked")
    listener.on_task_instance_success(previous_state=None, task_instance=db_task_instance())
    assert [r.path for r in requests_mock.request_history] == [f"/jobs/{JOB}/cancel"] * 2
    assert f"Canceled script-runner job {JOB}" in caplog.text and "was marked success" in caplog.text


def test_the_trigger_is_rebuilt_from_every_kwarg_it_serializes(set_connection, requests_mock):
    # A trigger with every setting given: the listener uses its connection and its job.
    set_connection("sr_other", host="other.test", port=9090)
    requests_mock.post(f"http://other.test:9090/jobs/{JOB}/cancel", json=job_body(JOB, "canceled"))
    trigger = ScriptRunnerJobTrigger(
        job_id=JOB,
        scriptrunner_conn_id="sr_other",
        poll_interval=3,
        deadline=Deadline(1_800_000_123.5, "execution_timeout", 20).to_dict(),
        idle={"idle_timeout": 30, "sizes": [10, 3], "since": 1_800_000_100.0},
        stream_logs=True,
        log_offsets={"stdout": 10, "stderr": 3},
        log_page_bytes=1024,
        max_consecutive_errors=4,
    )
    assert listener.cancel_job_of_ended_deferral(db_task_instance(trigger, try_number=2), "failed") is True
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("try_number", [3, None], ids=["try-3", "try-unknown"])
def test_the_marked_try_owns_the_triggers_job(conn, requests_mock, monkeypatch, try_number):
    # The user ended the task on its current try: that try, following the trigger's job, decides.
    asked = []

    def verdict(**inputs):
        asked.append(inputs)
        return CancelVerdict(True, "asked")

    monkeypatch.setattr(listener, "cancel_verdict", verdict)
    requests_mock.post(f"{BASE_URL}/jobs/{JOB}/cancel", json=job_body(JOB, "running"))
    assert listener.cancel_job_of_ended_deferral(db_task_instance(try_number=try_number), "success") is True
    assert asked == [
        {
            "cancel_on_kill": True,
            "state": "success",
            "own_try": try_number,
            "own_job": JOB,
            "owner": None if try_number is None else Owner(try_number, JOB),
            "deadline_passed": False,
        }
    ]


@pytest.mark.parametrize("try_number", [1, 5, None])
def test_a_deferred_task_marked_failed_on_any_try_gets_its_job_canceled(conn, requests_mock, try_number):
    requests_mock.post(f"{BASE_URL}/jobs/{JOB}/cancel", json=job_body(JOB, "running"))
    assert listener.cancel_job_of_ended_deferral(db_task_instance(try_number=try_number), "failed") is True
    assert [r.path for r in requests_mock.request_history] == [f"/jobs/{JOB}/cancel"]


@pytest.mark.parametrize(
    "ti",
    [SimpleNamespace(), db_task_instance(classpath="other.Trigger")],
    ids=["no-trigger", "other-trigger"],  # a worker's runtime task instance has no trigger
)
def test_other_tasks_are_left_alone(conn, requests_mock, ti):
    assert listener.cancel_job_of_ended_deferral(ti, "failed") is False
    assert requests_mock.call_count == 0


def test_a_deferred_sensors_job_is_left_alone(conn, requests_mock):
    # The sensor only watches: its trigger has cancel_on_kill=False.
    requests_mock.get(f"{BASE_URL}/jobs/{JOB}", json=job_body(JOB, "running"))
    with pytest.raises(TaskDeferred) as excinfo:
        ScriptRunnerJobSensor(task_id="watch", job_id=JOB, deferrable=True).execute({})
    ti = db_task_instance(excinfo.value.trigger)
    assert listener.cancel_job_of_ended_deferral(ti, "failed") is False
    assert [r.method for r in requests_mock.request_history] == ["GET"]


def test_an_unreadable_trigger_row_never_fails_the_request(conn, requests_mock, caplog):
    ti = db_task_instance()
    ti.trigger.kwargs = {**ti.trigger.kwargs, "end_time": 1_800_000_000.0}  # not a kwarg of this trigger
    assert listener.cancel_job_of_ended_deferral(ti, "failed") is False
    assert requests_mock.call_count == 0
    assert "Could not read the script-runner trigger" in caplog.text


def test_a_failed_cancel_never_fails_the_request(conn, requests_mock, caplog):
    requests_mock.post(f"{BASE_URL}/jobs/{JOB}/cancel", status_code=503, text="")
    assert listener.cancel_job_of_ended_deferral(db_task_instance(), "failed") is False
    assert requests_mock.call_count == 1  # no retries inside the user's request
    assert f"Could not cancel script-runner job {JOB}" in caplog.text


def test_airflow_calls_the_listener_through_the_provider_plugin(conn, requests_mock):
    # Found through the ``airflow.plugins`` entry point, as the api-server finds it, on every release.
    from airflow.listeners.listener import get_listener_manager

    manager = get_listener_manager()
    assert manager.pm.is_registered(listener)
    requests_mock.post(f"{BASE_URL}/jobs/{JOB}/cancel", json=job_body(JOB, "running"))
    manager.hook.on_task_instance_failed(
        previous_state=None, task_instance=db_task_instance(), error="marked"
    )
    assert [r.path for r in requests_mock.request_history] == [f"/jobs/{JOB}/cancel"]
