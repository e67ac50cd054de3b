"""
A mark touches only its own task, and leaves no orphan, on every supported release (marker
``reruns``): a deferred task marked failed the moment it is DEFERRED (its trigger may not have run
yet), and one marked while every triggerer is stopped. Each time the job is canceled, its script is
gone, and the next deferred task of the deployment runs normally (on SQLite a new trigger row can
take the id of the one just deleted, while the old trigger still runs).
"""

from __future__ import annotations

import pytest

from airflow_provider_scriptrunner.testing.server import TERMINAL_STATUSES
from tests.e2e.deployment import wait_for

pytestmark = pytest.mark.e2e


def _wait_deferred(api, dag_id: str, run_id: str) -> dict:
    def probe() -> dict | None:
        ti = api.task_instance(dag_id, run_id, "run")
        assert ti["state"] in (None, "scheduled", "queued", "running", "deferred"), ti["state"]
        return ti if ti["state"] == "deferred" else None

    return wait_for(f"{dag_id}/{run_id} to be deferred", probe, timeout=90, interval=0.05)


def _the_next_deferred_task_runs_normally(api, server_view, marks) -> None:
    tag = marks.new_tag("next-deferred")
    run_id = api.trigger("e2e_deferrable", {"tag": tag, "first_seconds": 4})
    ti = api.wait_state("e2e_deferrable", run_id, "run", "success", timeout=120)
    assert ti["try_number"] == 1, ti
    result = api.xcoms("e2e_deferrable", run_id, "run")["return_value"]
    assert server_view.job(result["job_id"])["status"] == "succeeded"
    assert len(marks.runs(tag)) == 1


def _job_is_canceled_and_gone(api, server_view, marks, job_pids_gone, run_id: str, tag: str) -> None:
    job_id = api.wait_xcom("e2e_deferrable", run_id, "run", "job_id")
    job = server_view.wait_job(job_id, TERMINAL_STATUSES, timeout=45)
    assert (job["status"], job["code"]) == ("canceled", -1), job
    job_pids_gone(tag)
    assert api.task_instance("e2e_deferrable", run_id, "run")["state"] == "failed"


def test_a_task_marked_failed_the_moment_it_defers_cancels_only_its_own_job(
    api, server_view, marks, job_pids_gone
):
    tag = marks.new_tag("early-mark")
    run_id = api.trigger("e2e_deferrable", {"tag": tag, "first_seconds": 90})
    _wait_deferred(api, "e2e_deferrable", run_id)
    api.set_state("e2e_deferrable", run_id, "run", "failed")

    _job_is_canceled_and_gone(api, server_view, marks, job_pids_gone, run_id, tag)
    _the_next_deferred_task_runs_normally(api, server_view, marks)


def test_a_task_marked_failed_while_no_triggerer_runs_cancels_its_job(
    airflow, api, server_view, marks, job_pids_gone
):
    tag = marks.new_tag("mark-no-triggerer")
    airflow.stop_component("triggerer")
    try:
        run_id = api.trigger("e2e_deferrable", {"tag": tag, "first_seconds": 90})
        _wait_deferred(api, "e2e_deferrable", run_id)
        marks.wait_runs(tag, 1)
        api.set_state("e2e_deferrable", run_id, "run", "failed")
        # No trigger runs: the provider's listener in the api-server cancels the job.
        _job_is_canceled_and_gone(api, server_view, marks, job_pids_gone, run_id, tag)
    finally:
        airflow.start_component("triggerer")
        airflow.wait_healthy(components=["triggerer"])
    _the_next_deferred_task_runs_normally(api, server_view, marks)
