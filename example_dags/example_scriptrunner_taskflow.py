"""
Example: ``@task.scriptrunner``, TaskFlow style: a Python function computes the script's args,
and the script's JSON output feeds a downstream ``@task``.

- ``pick_table`` (a plain ``@task``) decides which table to check.
- ``table_stats`` is decorated with ``@task.scriptrunner``: the function runs when the task runs,
  with its inputs resolved (the XComArg from ``pick_table``, and ``ds`` from the context), and
  returns the script's args. The script ``table-stats`` prints one JSON document;
  ``output_processor=json.loads`` turns it into the return value's ``result``.
- ``check_rows`` receives ``table_stats["result"]``: the parsed document, no string handling.

Expected outcome: all three tasks succeed; ``table_stats`` returns ``result`` ==
``{"table": "orders", "rows": 42, "columns": ["id", "created_at"]}``, and its Rendered
Templates show ``args`` ``["orders"]``; ``check_rows`` returns ``"orders has 42 rows"``.
"""

from __future__ import annotations

import json

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "scriptrunner"],
)
def example_scriptrunner_taskflow():
    @task
    def pick_table() -> str:
        return "orders"

    # [START howto_decorator_scriptrunner]
    @task.scriptrunner(script_id="table-stats", output_processor=json.loads, poll_interval=1)
    def table_stats(table: str, ds=None) -> list[str]:
        print(f"checking {table} for {ds}")
        return [table]

    @task
    def check_rows(stats: dict) -> str:
        if stats["rows"] == 0:
            raise ValueError(f"{stats['table']} is empty")
        return f"{stats['table']} has {stats['rows']} rows"

    stats = table_stats(pick_table())
    check_rows(stats["result"])
    # [END howto_decorator_scriptrunner]


example_scriptrunner_taskflow()
