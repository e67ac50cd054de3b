"""
A deferred run-script task whose script prints a line a second for 40 s: what
``dev/screenshots.py`` shows in the task's log while the task is DEFERRED.

Kept out of example_dags/ (whose every DAG the example tests run and check); the screenshot
command adds this folder as a second DAG bundle.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator

with DAG(
    dag_id="scriptrunner_live_output",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["scriptrunner", "dev"],
) as dag:
    ScriptRunnerRunScriptOperator(
        task_id="sleepy_deferred",
        script_id="sleepy",  # example_dags/scripts/sleepy.sh: "still working (i/N)" every second
        args=["40"],
        deferrable=True,
        poll_interval=2,
        timeout=timedelta(minutes=5),
    )
