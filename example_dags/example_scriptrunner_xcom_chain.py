"""
Example: one script's output becomes the next script's argument.

- ``count_orders``: ``count-rows orders`` prints only the row count (``42``) on stdout. The
  operator's return value (its XCom) holds the job result, including ``stdout``.
- ``report_orders``: ``report`` with ``args`` rendered from that XCom at run time:
  ``{{ ti.xcom_pull(task_ids='count_orders')['stdout'].strip() }}`` becomes ``"42"``. The
  server's whitelist checks the rendered value (``^[0-9]{1,3}$``), so a surprise in the first
  script's output fails the second task instead of reaching its shell.

Expected outcome: both tasks succeed; ``count_orders`` returns stdout ``"42\\n"``;
``report_orders`` prints ``row 1: ok`` ... ``row 42: ok`` and ``report finished with 42 rows`` on
stderr.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator

with DAG(
    dag_id="example_scriptrunner_xcom_chain",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "scriptrunner"],
) as dag:
    count_orders = ScriptRunnerRunScriptOperator(
        task_id="count_orders", script_id="count-rows", args=["orders"], poll_interval=1
    )

    report_orders = ScriptRunnerRunScriptOperator(
        task_id="report_orders",
        script_id="report",
        # rows = the count from the first script; delay = 0 (no pause between rows)
        args=["{{ ti.xcom_pull(task_ids='count_orders')['stdout'].strip() }}", "0"],
        poll_interval=1,
    )

    count_orders >> report_orders
