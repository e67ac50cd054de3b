"""
Example: start a script without waiting, wait for it in the triggerer, then read its output.

The async pattern: the submit task returns at once with the job id, so the worker slot is free
while the script runs; a deferrable sensor waits for the job in the triggerer; a logs task reads
the job's full stdout (the job object only carries the last few KB of it).

- ``submit_report``: starts ``report`` (4 rows, 0.3 s apart) and returns its job id.
- ``wait_for_report``: :class:`ScriptRunnerJobSensor` with ``deferrable=True``; succeeds with the
  finished job (as a dict) when it succeeded, fails at once when it failed. It checks the job
  once before deferring: a job that has already ended is judged at once, without a trigger.
- ``fetch_report``: :class:`ScriptRunnerGetJobLogsOperator` reads the whole of stdout.

Expected outcome: every task succeeds; ``wait_for_report`` returns the job with status
``succeeded`` and exit code 0, and ``fetch_report`` returns stdout ``row 1: ok`` ... ``row 4: ok``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_scriptrunner.operators.scriptrunner import (
    ScriptRunnerGetJobLogsOperator,
    ScriptRunnerSubmitScriptOperator,
)
from airflow_provider_scriptrunner.sensors.scriptrunner import ScriptRunnerJobSensor

JOB_ID = "{{ ti.xcom_pull(task_ids='submit_report') }}"

with DAG(
    dag_id="example_scriptrunner_async_sensor",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "scriptrunner"],
) as dag:
    submit_report = ScriptRunnerSubmitScriptOperator(
        task_id="submit_report", script_id="report", args=["4", "3"]
    )

    wait_for_report = ScriptRunnerJobSensor(
        task_id="wait_for_report",
        job_id=JOB_ID,
        deferrable=True,
        poke_interval=1,
        timeout=120,  # seconds; the sensor fails (the job goes on) if it takes longer
    )

    fetch_report = ScriptRunnerGetJobLogsOperator(task_id="fetch_report", job_id=JOB_ID, stream="stdout")

    submit_report >> wait_for_report >> fetch_report
