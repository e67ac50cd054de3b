"""
A deferred ``@task.scriptrunner`` task, for the OpenLineage test (tests/openlineage): the example
server's ``sleepy`` script runs 2 s, so the task defers and its trigger follows the job.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def ol_deferred_script():
    @task.scriptrunner(script_id="sleepy", deferrable=True, poll_interval=1)
    def wait_for_data() -> list[int]:
        return [2]

    wait_for_data()


ol_deferred_script()
