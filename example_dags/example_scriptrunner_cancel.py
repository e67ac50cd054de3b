"""
Example: stop a long-running job from a downstream task.

- ``start_long_job``: starts ``sleepy`` for 600 s (it prints a heartbeat every second) and
  returns the job id at once.
- ``cancel_long_job``: :class:`ScriptRunnerCancelJobOperator` asks the server to stop the job
  (SIGTERM to the script's process group), waits until the job has really ended and returns
  its final status. Canceling a job that already ended is not an error: it returns that status.
- ``logs_of_canceled_job``: the output the job wrote before it was stopped is still there.

Expected outcome: every task succeeds; ``cancel_long_job`` returns ``"canceled"`` and
``logs_of_canceled_job`` returns stdout that starts with ``still working (0/600)`` and does not
contain ``done``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_scriptrunner.operators.scriptrunner import (
    ScriptRunnerCancelJobOperator,
    ScriptRunnerGetJobLogsOperator,
    ScriptRunnerSubmitScriptOperator,
)

JOB_ID = "{{ ti.xcom_pull(task_ids='start_long_job') }}"

with DAG(
    dag_id="example_scriptrunner_cancel",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "scriptrunner"],
) as dag:
    start_long_job = ScriptRunnerSubmitScriptOperator(
        task_id="start_long_job", script_id="sleepy", args=["600"]
    )

    cancel_long_job = ScriptRunnerCancelJobOperator(
        task_id="cancel_long_job", job_id=JOB_ID, wait_timeout=30, poll_interval=0.5
    )

    logs_of_canceled_job = ScriptRunnerGetJobLogsOperator(
        task_id="logs_of_canceled_job", job_id=JOB_ID, stream="stdout"
    )

    start_long_job >> cancel_long_job >> logs_of_canceled_job
