"""
A DAG whose script fails, for the OpenLineage test (tests/openlineage): ``@task.scriptrunner`` runs
the example server's ``exit-with`` script with the arg 4, so the job fails with exit code 4 and the
task fails (no retries).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def ol_failing_script():
    @task.scriptrunner(script_id="exit-with", poll_interval=1, retries=0)
    def check_quality() -> list[int]:
        return [4]

    check_quality()


ol_failing_script()
