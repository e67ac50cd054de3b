"""
Example: a deferrable run with a time limit.

``build_report`` runs the ``report`` script (3 rows, 0.5 s apart: about 1.5 s) with
``deferrable=True``: the operator submits the job, sees it still running and hands the waiting
over to the triggerer, which polls every second. ``timeout=timedelta(minutes=2)`` is the task's
budget for the job: had the job still been running after two minutes, the trigger would have
canceled it on the server and the task would have failed. The deadline is a wall-clock time,
so it holds across the worker and the triggerer.

Expected outcome: ``build_report`` defers once, then succeeds well within its timeout and returns
the job's result: status ``succeeded``, exit code 0, stdout ``row 1: ok`` ... ``row 3: ok``, and a
``duration_ms`` of about 1500.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator

with DAG(
    dag_id="example_scriptrunner_deferrable_timeout",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "scriptrunner"],
) as dag:
    # [START howto_operator_scriptrunner_run_script_deferrable]
    build_report = ScriptRunnerRunScriptOperator(
        task_id="build_report",
        script_id="report",
        args=["3", "5"],
        deferrable=True,
        timeout=timedelta(minutes=2),
        poll_interval=1,
    )
    # [END howto_operator_scriptrunner_run_script_deferrable]
