"""
``@task.scriptrunner`` on real Airflow (see conftest.py), issue 16: a deferred decorator task whose
args come from an upstream task's XCom, whose output processor's result feeds a downstream task,
and whose asset event (with the job in its extra) makes the scheduler run a DAG scheduled on the
asset. DAGs: dags/e2e_taskflow_dags.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.deployment import wait_for

pytestmark = pytest.mark.e2e

PRODUCER = "e2e_taskflow"
CONSUMER = "e2e_taskflow_consumer"
ASSET_NAME = "e2e_taskflow_report"
#: How long the script works: long enough for the task to defer and its trigger to follow the job.
SECONDS = 8


@pytest.fixture(scope="module")
def taskflow_dags(dags_parsed) -> None:
    dags_parsed((PRODUCER, CONSUMER))


def test_a_deferred_decorator_task_feeds_a_downstream_task_and_an_asset_scheduled_dag(
    airflow, api, server_view, marks, job_pids_gone, taskflow_dags
):
    tag = marks.new_tag("taskflow")
    run_id = api.trigger(PRODUCER, {"tag": tag, "seconds": SECONDS})

    # The script takes SECONDS: the decorator task defers (its trigger follows the job, see below),
    # and its Rendered Templates show the args the function returned while it waits.
    api.wait_state(PRODUCER, run_id, "run", "deferred", timeout=90)
    args = [tag, SECONDS, 0, 0]  # as returned: numbers stay numbers (the script gets str() of them)

    def rendered_args_while_deferred() -> dict[str, Any] | None:
        ti = api.task_instance(PRODUCER, run_id, "run")
        assert ti["state"] == "deferred", f"left DEFERRED before its args were rendered: {ti}"
        return ti["rendered_fields"] if ti["rendered_fields"].get("args") == args else None

    rendered_while_deferred = wait_for("the args in Rendered Templates", rendered_args_while_deferred, 10)
    api.wait_run_state(PRODUCER, run_id, "success", timeout=120)
    ti = api.task_instance(PRODUCER, run_id, "run")
    assert (ti["state"], ti["try_number"]) == ("success", 1), ti

    # The script ran once, with the args the decorated function built from plan's XCom.
    [pid] = job_pids_gone(tag)
    assert api.xcoms(PRODUCER, run_id, "plan")["return_value"] == {"tag": tag, "seconds": SECONDS}
    xcoms = api.xcoms(PRODUCER, run_id, "run")
    returned = xcoms["return_value"]
    job_id = returned["job_id"]
    job = server_view.job(job_id)
    assert (job["status"], job["code"], job["scriptId"]) == ("succeeded", 0, "work"), job
    assert returned["stdout"] == (
        f"run 1 of {tag} (pid {pid}): working {SECONDS} s, then exit 0\nrun 1 of {tag} done\n"
    )
    # output_processor's result, in the return value and (multiple_outputs) as its own XCom.
    summary = {"tag": tag, "run": 1, "pid": pid, "seconds": SECONDS, "exit": 0, "done": True}
    assert returned["result"] == xcoms["result"] == summary
    assert xcoms["job_id"] == job_id
    # The downstream task got run["result"].
    assert api.xcoms(PRODUCER, run_id, "report")["return_value"] == (
        f"{tag}: pid {pid} worked {SECONDS} s, done=True"
    )
    # The trigger followed the job: the script's output is in its log.
    trigger_log = "\n".join(airflow.trigger_logs(PRODUCER, run_id, "run", 1).values())
    assert f"run 1 of {tag} done" in trigger_log, trigger_log[-3000:]

    # Rendered Templates show the args and the function's inputs (plan's XCom), deferred and after.
    for fields in (rendered_while_deferred, ti["rendered_fields"]):
        assert fields["args"] == args, fields
        assert fields["op_args"] == [{"tag": tag, "seconds": SECONDS}], fields
        assert fields["script_id"] == "work", fields

    # The scheduler ran the consumer DAG on the asset event.
    def consumer_runs() -> list[dict[str, Any]]:
        return api.request("GET", f"/api/v2/dags/{CONSUMER}/dagRuns")["dag_runs"]

    [created] = wait_for(f"{CONSUMER} to run on the asset event", consumer_runs, timeout=60, interval=1)
    assert created["run_type"] == "asset_triggered", created
    api.wait_run_state(CONSUMER, created["dag_run_id"], "success", timeout=90)
    assert api.xcoms(CONSUMER, created["dag_run_id"], "which_job")["return_value"] == [job_id]

    # The asset event carries the job, and names the consumer run it triggered. Read once that run
    # has started: while it is queued, Airflow 3.3.2 answers 500 (its start_date None fails the
    # response model: apache/airflow#71360, fixed in a later release).
    params = {"source_dag_id": PRODUCER, "source_run_id": run_id}
    [event] = api.request("GET", "/api/v2/assets/events", params=params)["asset_events"]
    assert event["name"] == ASSET_NAME
    assert event["extra"]["scriptrunner"] == {
        "job_id": job_id,
        "script_id": "work",
        "exit_code": 0,
        "duration_ms": returned["duration_ms"],
    }
    assert [(r["dag_id"], r["run_id"]) for r in event["created_dagruns"]] == [
        (CONSUMER, created["dag_run_id"])
    ]
