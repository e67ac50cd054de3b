"""
Deferred mode on real Airflow (see conftest.py), issue 8: ``execution_timeout`` of a deferred task
cancels its job on time, the task log shows the script's output while the task is still DEFERRED
and, once it resumed, each line once; a cleared deferred task's next try reattaches to its job.
DAGs: dags/e2e_deferred_mode_dags.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from airflow_provider_scriptrunner.testing.harness import process_alive
from airflow_provider_scriptrunner.testing.server import TERMINAL_STATUSES
from tests.e2e.deployment import wait_for
from tests.e2e.test_airflow_e2e import job_id_of, wait_deferred_on_triggerer

pytestmark = pytest.mark.e2e

DEFERRED_TIMEOUT_DAG = "e2e_deferred_execution_timeout"
WORKER_TIMEOUT_DAG = "e2e_worker_execution_timeout"
LIVE_DAG = "e2e_deferred_live_output"
DAG_IDS = (DEFERRED_TIMEOUT_DAG, WORKER_TIMEOUT_DAG, LIVE_DAG)
#: The DAGs' execution_timeout, and how long after the try's start the task must have failed.
EXECUTION_TIMEOUT = 20
FAILED_WITHIN = 45


def at(timestamp: str) -> float:
    """Epoch seconds of an ISO-8601 time from Airflow's API or the script-runner."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def deferred_dags(airflow, api) -> None:
    """This module's DAGs are parsed and unpaused."""

    def parsed(dag_id: str) -> bool:
        response = api.session.get(f"{api.base_url}/api/v2/dags/{dag_id}", timeout=10)
        return response.status_code == 200 and not response.json().get("is_paused", True)

    wait_for(
        f"the DAGs {DAG_IDS} to be parsed",
        lambda: all(parsed(dag_id) for dag_id in DAG_IDS),
        timeout=180,
        interval=1,
        on_timeout=lambda: airflow.tail("dag-processor"),
    )


def first_start(api, dag_id: str, run_id: str, state: str) -> dict[str, Any]:
    """The task instance once it is in ``state`` (its ``start_date`` is the try's start)."""
    ti = api.wait_state(dag_id, run_id, "run", state, timeout=90)
    assert ti["start_date"], ti
    return ti


def test_execution_timeout_fails_the_task_on_time_and_cancels_its_job(
    api, server_view, marks, job_pids_gone, deferred_dags
):
    # The same 150 s script under execution_timeout=20 s, deferred and in the worker, side by side.
    tags = {
        dag_id: marks.new_tag(dag_id.replace("_", "-"))
        for dag_id in (DEFERRED_TIMEOUT_DAG, WORKER_TIMEOUT_DAG)
    }
    runs = {dag_id: api.trigger(dag_id, {"tag": tag, "first_seconds": 150}) for dag_id, tag in tags.items()}
    started = {
        DEFERRED_TIMEOUT_DAG: first_start(api, DEFERRED_TIMEOUT_DAG, runs[DEFERRED_TIMEOUT_DAG], "deferred"),
        WORKER_TIMEOUT_DAG: first_start(api, WORKER_TIMEOUT_DAG, runs[WORKER_TIMEOUT_DAG], "running"),
    }

    for dag_id, run_id in runs.items():
        job_id = job_id_of(api, dag_id, run_id)
        start = at(started[dag_id]["start_date"])
        ti = api.wait_state(dag_id, run_id, "run", "failed", timeout=FAILED_WITHIN + 30)
        # Failed at the deadline, counted from the try's start: not after the script's 150 s.
        failed_after = at(ti["end_date"]) - start
        assert EXECUTION_TIMEOUT - 1 <= failed_after < FAILED_WITHIN, (dag_id, failed_after, ti)
        assert ti["try_number"] == 1
        # The job was canceled at the deadline and its script is gone; it ran once.
        job = server_view.wait_job(job_id, TERMINAL_STATUSES, timeout=30)
        assert (job["status"], job["code"]) == ("canceled", -1), (dag_id, job)
        assert at(job["endedAt"]) - start < FAILED_WITHIN, (dag_id, job)
        job_pids_gone(tags[dag_id])
        assert len(marks.runs(tags[dag_id])) == 1
        # The task log says which limit fired, and that the job was canceled.
        log = api.task_log(dag_id, run_id, "run", 1)
        assert (
            f"job {job_id} did not finish within execution_timeout={EXECUTION_TIMEOUT} s; it was canceled"
            in log
        ), (
            dag_id,
            log[-3000:],
        )


def test_a_deferred_tasks_log_shows_the_scripts_output_while_deferred_and_once_after(
    airflow, api, server_view, marks, deferred_dags
):
    tag = marks.new_tag("live-output")
    run_id = api.trigger(LIVE_DAG, {"tag": tag, "first_seconds": 25})
    wait_deferred_on_triggerer(airflow, api, LIVE_DAG, run_id)
    job_id = job_id_of(api, LIVE_DAG, run_id)
    (pid,) = marks.wait_runs(tag, 1)
    first = f"[stdout] run 1 of {tag} (pid {pid}): working 25 s, then exit 0"
    last = f"[stdout] run 1 of {tag} done"

    def log_while_deferred() -> str | None:
        log = api.task_log(LIVE_DAG, run_id, "run", 1)
        state = api.task_instance(LIVE_DAG, run_id, "run")["state"]
        assert state == "deferred", (
            f"the task left DEFERRED ({state}) before its log showed the script's output"
        )
        return log if first in log else None

    # GET .../logs/1 shows the trigger's [stdout] line while the task is DEFERRED and the job runs.
    log = wait_for(
        "the script's first line in the task log while deferred", log_while_deferred, timeout=20, interval=0.5
    )
    assert last not in log
    assert server_view.job(job_id)["status"] == "running"

    ti = api.wait_state(LIVE_DAG, run_id, "run", "success", timeout=90)
    assert ti["try_number"] == 1
    # After the task resumed and succeeded: every line of the script once in the whole task log.
    log = api.task_log(LIVE_DAG, run_id, "run", 1)
    assert log.count(first) == 1 and log.count(last) == 1, log[-4000:]
    assert sum(line.startswith("[stdout] ") for line in log.splitlines()) == 2, log[-4000:]
    # Both came from the trigger (the resumed task had nothing left to log); the result has them.
    trigger_log = "\n".join(airflow.trigger_logs(LIVE_DAG, run_id, "run", 1).values())
    assert first in trigger_log and last in trigger_log, trigger_log[-3000:]
    result = api.xcoms(LIVE_DAG, run_id, "run")["return_value"]
    assert result["job_id"] == job_id
    assert result["stdout"] == f"{first[len('[stdout] ') :]}\n{last[len('[stdout] ') :]}\n"


def test_clearing_a_deferred_task_reattaches_its_next_try_to_the_running_job(
    airflow, api, server_view, marks, job_pids_gone, deferred_dags
):
    tag = marks.new_tag("cleared-deferred")
    run_id = api.trigger(LIVE_DAG, {"tag": tag, "first_seconds": 30})
    wait_deferred_on_triggerer(airflow, api, LIVE_DAG, run_id)
    job_id = job_id_of(api, LIVE_DAG, run_id)
    (pid,) = marks.wait_runs(tag, 1)
    assert server_view.job(job_id)["status"] == "running" and process_alive(pid)

    api.clear(LIVE_DAG, run_id, ["run"])

    # The old try's trigger does not cancel (a newer try owns the job); the new try reattaches.
    ti = api.wait_state(LIVE_DAG, run_id, "run", "success", timeout=120)
    assert ti["try_number"] == 2
    job = server_view.job(job_id)
    assert (job["status"], job["code"]) == ("succeeded", 0), job
    assert job_pids_gone(tag) == [pid], "the script ran exactly once"
    assert api.xcoms(LIVE_DAG, run_id, "run")["return_value"]["job_id"] == job_id
    second_log = api.task_log(LIVE_DAG, run_id, "run", 2)
    assert f"Reattaching to job {job_id} from an earlier try" in second_log, second_log[-3000:]
    api.wait_run_state(LIVE_DAG, run_id, "success")
