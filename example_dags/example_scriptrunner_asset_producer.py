"""
Example: a script that produces data declares it as an asset; each asset event says which job made it.

``export_orders`` runs the script ``table-stats`` with ``outlets=[ORDERS_STATS]``. When the task
succeeds, Airflow records an asset event for ``orders_stats``; the provider puts the job's details
into the event's extra, under ``"scriptrunner"``: ``job_id``, ``script_id``, ``exit_code`` and
``duration_ms``. DAGs scheduled on the asset (``example_scriptrunner_asset_consumer``) then run, and
can tell which job produced the data.

Expected outcome: ``export_orders`` succeeds and returns ``result`` ``{"table": "orders", "rows": 42,
...}``; one asset event of ``orders_stats`` whose extra is ``{"scriptrunner": {"job_id": <its job>,
"script_id": "table-stats", "exit_code": 0, "duration_ms": <ms>}}``.
"""

from __future__ import annotations

import json

import pendulum
from airflow.sdk import Asset, dag, task

# [START howto_asset_scriptrunner_producer]
ORDERS_STATS = Asset(name="orders_stats", uri="file:///data/exports/orders_stats.json")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "scriptrunner"],
)
def example_scriptrunner_asset_producer():
    @task.scriptrunner(
        script_id="table-stats", outlets=[ORDERS_STATS], output_processor=json.loads, poll_interval=1
    )
    def export_orders() -> list[str]:
        return ["orders"]

    export_orders()


# [END howto_asset_scriptrunner_producer]

example_scriptrunner_asset_producer()
