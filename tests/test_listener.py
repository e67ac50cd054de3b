"""The listener that cancels a deferred task's job when a user ends the task before its trigger ran."""

from __future__ import annotations

from types import SimpleNamespace

from airflow_provider_scriptrunner import listener
from tests.conftest import BASE_URL, job_body

JOB = "job_7_1"


def db_task_instance(classpath=listener.TRIGGER_CLASSPATH, **kwargs):
    kwargs = {"job_id": JOB, "scriptrunner_conn_id": "scriptrunner_default", "cancel_on_kill": True, **kwargs}
    return SimpleNamespace(trigger=SimpleNamespace(classpath=classpath, kwargs=kwargs))


def test_marking_a_deferred_task_failed_cancels_its_job(conn, requests_mock):
    requests_mock.post(f"{BASE_URL}/jobs/{JOB}/cancel", json=job_body(JOB, "running"))
    listener.on_task_instance_failed(previous_state=None, task_instance=db_task_instance(), error="marked")
    listener.on_task_instance_success(previous_state=None, task_instance=db_task_instance())
    assert [r.path for r in requests_mock.request_history] == [f"/jobs/{JOB}/cancel"] * 2


def test_other_tasks_are_left_alone(conn, requests_mock):
    # A worker's runtime task instance has no trigger; another trigger; a sensor (cancel_on_kill=False).
    for ti in (
        SimpleNamespace(),
        db_task_instance(classpath="other.Trigger"),
        db_task_instance(cancel_on_kill=False),
    ):
        assert listener.cancel_job_of_ended_deferral(ti, "failed") is False
    assert requests_mock.call_count == 0


def test_a_failed_cancel_never_fails_the_request(conn, requests_mock, caplog):
    requests_mock.post(f"{BASE_URL}/jobs/{JOB}/cancel", status_code=503, text="")
    assert listener.cancel_job_of_ended_deferral(db_task_instance(), "failed") is False
    assert requests_mock.call_count == 1  # no retries inside the user's request
    assert f"Could not cancel script-runner job {JOB}" in caplog.text


def test_the_plugin_registers_the_listener():
    from airflow_provider_scriptrunner._compat import TRIGGER_HAS_ON_KILL
    from airflow_provider_scriptrunner.plugins import ScriptRunnerPlugin

    assert ScriptRunnerPlugin.listeners == ([listener] if TRIGGER_HAS_ON_KILL else [])
