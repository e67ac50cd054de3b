"""
Example: a DAG scheduled on an asset that a script produces reads which job produced it.

It runs each time ``example_scriptrunner_asset_producer`` updates ``orders_stats``.
``which_job`` reads the triggering asset events: each one's extra names the script-runner job
(``extra["scriptrunner"]["job_id"]``), its script, exit code and duration.

Expected outcome: when the producer ran, ``which_job`` returns the producer's job id(s), e.g.
``["job_1795342284509_3"]``. Run by hand (as ``airflow dags test`` does) there is no triggering
event, and it returns ``[]``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

ORDERS_STATS = Asset(name="orders_stats", uri="file:///data/exports/orders_stats.json")


# [START howto_asset_scriptrunner_consumer]
@dag(
    schedule=[ORDERS_STATS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "scriptrunner"],
)
def example_scriptrunner_asset_consumer():
    @task
    def which_job(triggering_asset_events=None) -> list[str]:
        jobs = []
        # Empty when the run was not triggered by the asset (e.g. started by hand).
        for event in triggering_asset_events[ORDERS_STATS] if triggering_asset_events else []:
            run = event.extra["scriptrunner"]
            print(f"{ORDERS_STATS.name} came from job {run['job_id']} of script {run['script_id']}")
            jobs.append(run["job_id"])
        return jobs

    which_job()


# [END howto_asset_scriptrunner_consumer]

example_scriptrunner_asset_consumer()
