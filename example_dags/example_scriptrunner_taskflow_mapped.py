"""
Example: ``@task.scriptrunner`` mapped over args computed at run time, deferrable.

- ``list_tables`` returns the tables to check; how many there are is known only when it ran.
- ``row_count`` is expanded over them: one mapped task instance, and one script-runner job, per
  table. Each waits in the triggerer (``deferrable=True``); ``output_processor=int`` turns the
  script's output (``42``) into a number.
- ``total_rows`` receives the results of every instance, in map-index order.

Expected outcome: ``row_count`` has 3 mapped instances (0, 1, 2), all successful, each with
``result`` 42; ``total_rows`` returns 126.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "scriptrunner"],
)
def example_scriptrunner_taskflow_mapped():
    @task
    def list_tables() -> list[str]:
        return ["orders", "customers", "payments"]

    # [START howto_decorator_scriptrunner_mapped]
    @task.scriptrunner(script_id="count-rows", output_processor=int, deferrable=True, poll_interval=1)
    def row_count(table: str) -> list[str]:
        return [table]

    @task
    def total_rows(results: list[dict]) -> int:
        return sum(result["result"] for result in results)

    total_rows(row_count.expand(table=list_tables()))
    # [END howto_decorator_scriptrunner_mapped]


example_scriptrunner_taskflow_mapped()
