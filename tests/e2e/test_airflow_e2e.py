"""
End to end on real Airflow components (see conftest.py): each test drives a DAG run through the
public REST API and checks both Airflow's view (task instance states, XComs, task logs) and the
script-runner's view (GET /jobs/{id} on the bundled server; the script's own processes).
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_scriptrunner.testing.harness import process_alive
from airflow_provider_scriptrunner.testing.server import TERMINAL_STATUSES
from tests.e2e.deployment import AirflowApi, AirflowDeployment, wait_for

pytestmark = pytest.mark.e2e

TRIGGER_CLASSPATH = "airflow_provider_scriptrunner.triggers.scriptrunner.ScriptRunnerJobTrigger"
#: The order in which a deferrable task's first try moves through the states we can observe.
DEFERRED_PATH = ["scheduled", "queued", "running", "deferred"]


def job_id_of(api: AirflowApi, dag_id: str, run_id: str, previous: str | None = None) -> str:
    """The job id the operator published in XCom (``job_id``); waits for a new one after ``previous``."""

    def probe() -> str | None:
        job_id = api.xcoms(dag_id, run_id, "run").get("job_id")
        return job_id if job_id and job_id != previous else None

    return wait_for(f"a job id in the XComs of {dag_id}/{run_id}", probe, timeout=60)


def wait_deferred_on_triggerer(
    airflow: AirflowDeployment,
    api: AirflowApi,
    dag_id: str,
    run_id: str,
    seen: list[str] | None = None,
    not_on: int | None = None,
) -> dict[str, Any]:
    """
    Wait until the task is DEFERRED and its trigger runs on a triggerer (other than job ``not_on``).

    The task may leave DEFERRED for a moment before that and defer again: on SQLite its trigger
    row can take the id of the row of a task an earlier test ended, whose trigger still runs, and
    that trigger's event then reaches this task, which ignores it and defers anew.
    """
    api.wait_state(dag_id, run_id, "run", "deferred", seen=seen)

    def probe() -> dict[str, Any] | None:
        ti = api.task_instance(dag_id, run_id, "run")
        if seen is not None and seen[-1] != ti["state"]:
            seen.append(ti["state"])
        assert ti["state"] in ("deferred", "scheduled", "queued", "running"), (
            f"ended before a triggerer ran its trigger: {ti['state']}"
        )
        if ti["state"] != "deferred":
            return None
        triggerer = ti["triggerer_job"]
        if not (ti["trigger"] and triggerer and triggerer["id"] != not_on):
            return None
        # Assigned is not yet running: the triggerer logs "... starting" once the trigger runs.
        logs = airflow.trigger_logs(dag_id, run_id, "run", ti["try_number"])
        started = logs.get(f"attempt={ti['try_number']}.log.trigger.{triggerer['id']}.log", "")
        return ti if " starting" in started else None

    return wait_for(f"a triggerer to run the trigger of {dag_id}/{run_id}", probe, timeout=60)


def test_every_component_listens_on_loopback_only(airflow):
    sockets = airflow.listening_sockets()
    assert ("127.0.0.1", airflow.api_port) in {(address, port) for _, address, port in sockets}
    assert all(address == "127.0.0.1" for _, address, _ in sockets), sockets


def test_deferrable_run_waits_in_the_triggerer_then_succeeds(airflow, api, server_view, marks, job_pids_gone):
    tag = marks.new_tag("deferred-ok")
    run_id = api.trigger("e2e_deferrable", {"tag": tag, "first_seconds": 8})
    seen: list[str] = []

    ti = wait_deferred_on_triggerer(airflow, api, "e2e_deferrable", run_id, seen)
    job_id = job_id_of(api, "e2e_deferrable", run_id)
    # Airflow: the trigger is ours and a triggerer runs it; meanwhile the job runs on the server.
    assert ti["trigger"]["classpath"] == TRIGGER_CLASSPATH
    assert ti["triggerer_job"]["job_type"] == "TriggererJob"
    assert server_view.job(job_id)["status"] == "running"

    done = api.wait_state("e2e_deferrable", run_id, "run", "success", seen=seen)

    # queued -> running -> deferred -> (resumed) -> success, in that order.
    first_try = seen[: seen.index("deferred") + 1]
    observed = [state for state in first_try if state in DEFERRED_PATH]
    assert observed == sorted(observed, key=DEFERRED_PATH.index), seen
    # A short running or queued spell can fall between two samples: the try's timestamps show it.
    assert "running" in observed or ti["start_date"] is not None, (seen, ti)
    assert "queued" in observed or ti["queued_when"] <= ti["start_date"], (seen, ti)
    assert seen[-1] == "success" and done["try_number"] == 1, seen

    # The script-runner's view: one job, succeeded, its script ran once and is gone.
    job = server_view.job(job_id)
    assert (job["status"], job["code"]) == ("succeeded", 0)
    assert len(job_pids_gone(tag)) == 1
    result = api.xcoms("e2e_deferrable", run_id, "run")["return_value"]
    assert result["job_id"] == job_id and result["status"] == "succeeded"
    assert f"run 1 of {tag} done" in result["stdout"]

    # The trigger ran on the triggerer: its log (kept next to the task log) says so.
    trigger_logs = airflow.trigger_logs("e2e_deferrable", run_id, "run", try_number=1)
    assert trigger_logs, "no trigger log was written by the triggerer"
    text = "\n".join(trigger_logs.values())
    assert "starting" in text and "Trigger fired event" in text and job_id in text, text[-3000:]


def test_marking_a_deferred_task_failed_cancels_its_job(airflow, api, server_view, marks, job_pids_gone):
    tag = marks.new_tag("deferred-killed")
    run_id = api.trigger("e2e_deferrable", {"tag": tag, "first_seconds": 120})
    wait_deferred_on_triggerer(airflow, api, "e2e_deferrable", run_id)
    job_id = job_id_of(api, "e2e_deferrable", run_id)
    (pid,) = marks.wait_runs(tag, 1)
    assert server_view.job(job_id)["status"] == "running" and process_alive(pid)

    api.set_state("e2e_deferrable", run_id, "run", "failed")

    # Airflow 3.3 calls the trigger's on_kill, which cancels the job on the server.
    job = server_view.wait_job(job_id, TERMINAL_STATUSES, timeout=45)
    assert (job["status"], job["code"]) == ("canceled", -1), job
    job_pids_gone(tag)
    assert api.task_instance("e2e_deferrable", run_id, "run")["state"] == "failed"
    assert len(marks.runs(tag)) == 1, "the script must not have been started again"
    # Who canceled it: the provider's listener in the api-server, in the user's request (it usually
    # wins), or the trigger, stopped for the user's action (Airflow 3.3+: on_kill; 3.1/3.2: its
    # cancelled task). Either way one of them says so. (A trigger's own lines are not required:
    # Airflow 3.3 sometimes drops lines a trigger logs while being cancelled.)
    by_listener = f"Canceled script-runner job {job_id}" in airflow.components["api-server"].log_text()
    log = "\n".join(airflow.trigger_logs("e2e_deferrable", run_id, "run", 1).values())
    by_trigger = (
        "Trigger cancelled by user action, invoking on_kill" in log or f"Canceled job {job_id}" in log
    )
    assert by_listener or by_trigger, log[-3000:]


def test_marking_a_running_worker_task_failed_cancels_its_job(api, server_view, marks, job_pids_gone):
    tag = marks.new_tag("worker-killed")
    run_id = api.trigger("e2e_worker", {"tag": tag, "first_seconds": 120})
    api.wait_state("e2e_worker", run_id, "run", "running")
    (pid,) = marks.wait_runs(tag, 1)
    job_id = job_id_of(api, "e2e_worker", run_id)
    assert server_view.job(job_id)["status"] == "running" and process_alive(pid)

    api.set_state("e2e_worker", run_id, "run", "failed")

    # The supervisor's next heartbeat is refused; it SIGTERMs the task, whose on_kill cancels.
    job = server_view.wait_job(job_id, TERMINAL_STATUSES, timeout=45)
    assert (job["status"], job["code"]) == ("canceled", -1), job
    job_pids_gone(tag)
    assert api.task_instance("e2e_worker", run_id, "run")["state"] == "failed"
    # ... and it was the operator's on_kill, in the worker (its log line is in the task log).
    expected = f"Canceled job {job_id} because the task was killed"
    wait_for(
        "the on_kill message in the task log",
        lambda: expected in api.task_log("e2e_worker", run_id, "run", 1),
        30,
    )


def test_clearing_a_task_reruns_its_script_as_a_new_job(api, server_view, marks):
    tag = marks.new_tag("cleared")
    # First run of the script exits 1; later runs succeed.
    run_id = api.trigger("e2e_worker", {"tag": tag, "first_seconds": 0, "first_exit": 1})
    api.wait_state("e2e_worker", run_id, "run", "failed")
    api.wait_run_state("e2e_worker", run_id, "failed")
    failed_job = job_id_of(api, "e2e_worker", run_id)
    assert (server_view.job(failed_job)["status"], server_view.job(failed_job)["code"]) == ("failed", 1)

    # Clearing the failed task: a new try, a new job, and this time the script succeeds.
    api.clear("e2e_worker", run_id, ["run"], only_failed=True)
    ti = api.wait_state("e2e_worker", run_id, "run", "success")
    second_job = job_id_of(api, "e2e_worker", run_id, previous=failed_job)
    assert ti["try_number"] == 2
    assert server_view.job(second_job)["status"] == "succeeded"
    api.wait_run_state("e2e_worker", run_id, "success")

    # Clearing a successful task runs the script again (no reattaching to a finished job).
    api.clear("e2e_worker", run_id, ["run"])
    ti = api.wait_state("e2e_worker", run_id, "run", "success")
    third_job = job_id_of(api, "e2e_worker", run_id, previous=second_job)
    assert ti["try_number"] == 3
    assert server_view.job(third_job)["status"] == "succeeded"
    assert len({failed_job, second_job, third_job}) == 3
    assert len(marks.runs(tag)) == 3, "the script should have run once per try"


def test_restarting_the_triggerer_mid_job_does_not_cancel_it(airflow, api, server_view, marks, job_pids_gone):
    tag = marks.new_tag("triggerer-restart")
    # Long enough to outlast a trigger that starts late and a slow triggerer stop on a busy machine.
    run_id = api.trigger("e2e_deferrable", {"tag": tag, "first_seconds": 60})
    before = wait_deferred_on_triggerer(airflow, api, "e2e_deferrable", run_id)
    job_id = job_id_of(api, "e2e_deferrable", run_id)
    (pid,) = marks.wait_runs(tag, 1)

    airflow.stop_component("triggerer")
    # The triggerer shut down; the job goes on, and the task stays deferred.
    job = server_view.job(job_id)
    assert job["status"] == "running" and process_alive(pid), job
    assert api.task_instance("e2e_deferrable", run_id, "run")["state"] == "deferred"

    airflow.start_component("triggerer")
    airflow.wait_healthy(components=["triggerer"])
    # The new triggerer takes the trigger over (the old one's job ended) and follows the same job.
    wait_deferred_on_triggerer(airflow, api, "e2e_deferrable", run_id, not_on=before["triggerer_job"]["id"])

    ti = api.wait_state("e2e_deferrable", run_id, "run", "success", timeout=120)
    assert ti["try_number"] == 1
    job = server_view.job(job_id)
    assert (job["status"], job["code"]) == ("succeeded", 0), job
    assert job_pids_gone(tag) == [pid], "the script ran exactly once"
    assert api.xcoms("e2e_deferrable", run_id, "run")["return_value"]["job_id"] == job_id


def test_restarting_the_scriptrunner_mid_job_fails_the_try_and_the_retry_succeeds(
    api, scriptrunner, server_view, marks, job_pids_gone
):
    tag = marks.new_tag("server-restart")
    run_id = api.trigger("e2e_worker_retry", {"tag": tag, "first_seconds": 120, "later_seconds": 1})
    api.wait_state("e2e_worker_retry", run_id, "run", "running")
    (first_pid,) = marks.wait_runs(tag, 1)
    lost_job = job_id_of(api, "e2e_worker_retry", run_id)

    scriptrunner.restart()

    job = server_view.job(lost_job)
    assert (job["status"], job["code"]) == ("failed", -1), job
    assert not process_alive(first_pid)
    ti = api.wait_state("e2e_worker_retry", run_id, "run", "success", timeout=120)
    assert ti["try_number"] == 2
    first_log = api.task_log("e2e_worker_retry", run_id, "run", 1)
    assert f"job {lost_job}) ended with code -1" in first_log, first_log[-3000:]
    assert "lost when the script-runner server restarted" in first_log

    retry_job = job_id_of(api, "e2e_worker_retry", run_id, previous=lost_job)
    assert server_view.job(retry_job)["status"] == "succeeded"
    assert len(job_pids_gone(tag)) == 2
