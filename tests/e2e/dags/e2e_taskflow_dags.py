"""
DAGs for the TaskFlow end-to-end test (tests/e2e/test_taskflow_e2e.py): ``@task.scriptrunner``
deferred, with an output processor and an asset, and a DAG scheduled on that asset.

- ``e2e_taskflow``: ``plan`` (a plain ``@task``) reads the run's conf ``{"tag": ..., "seconds": ...}``;
  ``run`` (``@task.scriptrunner``, deferrable) turns the plan into the ``work`` script's args, its
  ``output_processor`` turns the script's stdout into a dict, and its success updates
  ``E2E_TASKFLOW_ASSET``; ``report`` (a plain ``@task``) receives ``run["result"]``.
- ``e2e_taskflow_consumer``: scheduled on ``E2E_TASKFLOW_ASSET``; ``which_job`` returns the job id
  in the extra of each triggering asset event.
"""

from __future__ import annotations

import re
from typing import Any

import pendulum
from airflow.sdk import Asset, dag, task

START = pendulum.datetime(2026, 1, 1, tz="UTC")
E2E_TASKFLOW_ASSET = Asset(name="e2e_taskflow_report", uri="file:///e2e/scriptrunner/taskflow_report.txt")
#: The first line the ``work`` script prints (tests/e2e/observe.py).
WORK_STARTED = re.compile(
    r"^run (?P<run>\d+) of (?P<tag>\S+) \(pid (?P<pid>\d+)\): working (?P<seconds>\d+) s, then exit (?P<exit>\d+)$",
    re.MULTILINE,
)


def work_summary(stdout: str) -> dict[str, Any]:
    """What the ``work`` script said about its run: the tag, pid, seconds and exit code it was given."""
    started = WORK_STARTED.search(stdout)
    if started is None:
        raise ValueError(f"not the output of the work script: {stdout!r:.200}")
    return {
        "tag": started["tag"],
        "run": int(started["run"]),
        "pid": int(started["pid"]),
        "seconds": int(started["seconds"]),
        "exit": int(started["exit"]),
        "done": f"run {started['run']} of {started['tag']} done" in stdout,
    }


@dag(schedule=None, start_date=START, catchup=False, tags=["scriptrunner-e2e"])
def e2e_taskflow():
    """``@task.scriptrunner`` deferred: args from an upstream task, a result for a downstream one, an asset."""

    @task
    def plan(dag_run=None) -> dict[str, Any]:
        conf = dag_run.conf
        return {"tag": conf["tag"], "seconds": int(conf["seconds"])}

    @task.scriptrunner(
        script_id="work",
        deferrable=True,
        poll_interval=1,
        output_processor=work_summary,
        outlets=[E2E_TASKFLOW_ASSET],
    )
    def run(plan: dict[str, Any]) -> list[Any]:
        # work TAG FIRST_SECONDS FIRST_EXIT LATER_SECONDS; the numbers go as numbers (converted with str()).
        return [plan["tag"], plan["seconds"], 0, 0]

    @task
    def report(summary: dict[str, Any]) -> str:
        return f"{summary['tag']}: pid {summary['pid']} worked {summary['seconds']} s, done={summary['done']}"

    report(run(plan())["result"])


@dag(schedule=[E2E_TASKFLOW_ASSET], start_date=START, catchup=False, tags=["scriptrunner-e2e"])
def e2e_taskflow_consumer():
    """Runs on each update of ``E2E_TASKFLOW_ASSET``; ``which_job`` names the jobs that produced it."""

    @task
    def which_job(triggering_asset_events=None) -> list[str]:
        return [
            event.extra["scriptrunner"]["job_id"] for event in triggering_asset_events[E2E_TASKFLOW_ASSET]
        ]

    which_job()


e2e_taskflow()
e2e_taskflow_consumer()
