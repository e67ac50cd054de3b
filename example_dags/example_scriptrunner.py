"""
Example: the script-runner provider's building blocks in one DAG (the one ``make demo`` runs).

- ``greet``: run a script and wait for its result, with templated args: the first argument is
  rendered from the DAG run (``{{ dag_run.run_id[:20] }}``) when the task runs. The task streams
  the script's output into its log and returns the job's result (status, exit code, stdout, ...).
- ``submit_report`` -> ``wait_report`` -> ``report_logs``: an async submit that returns the job id
  at once, a deferrable sensor that waits in the triggerer, then the job's logs.
- ``submit_long`` -> ``cancel_long``: start a long job and cancel it from a downstream task.

The other example_scriptrunner_* DAGs show each pattern (and more) on its own.

Expected outcome: every task succeeds. ``greet`` returns exit code 0 and stdout
``Hello, manual__...! ...`` / ``Hello, Airflow! ...``; ``wait_report`` returns the succeeded job;
``report_logs`` returns ``row 1: ok`` ... ``row 5: ok`` on stdout and
``report finished with 5 rows`` on stderr; ``cancel_long`` returns ``"canceled"``.

Run it against the bundled server with ``make demo``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_scriptrunner.operators.scriptrunner import (
    ScriptRunnerCancelJobOperator,
    ScriptRunnerGetJobLogsOperator,
    ScriptRunnerRunScriptOperator,
    ScriptRunnerSubmitScriptOperator,
)
from airflow_provider_scriptrunner.sensors.scriptrunner import ScriptRunnerJobSensor

with DAG(
    dag_id="example_scriptrunner",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "scriptrunner"],
) as dag:
    # [START howto_operator_scriptrunner_run_script]
    greet = ScriptRunnerRunScriptOperator(
        task_id="greet",
        script_id="greet",
        args=["{{ dag_run.run_id[:20] }}", "Airflow"],
        poll_interval=2,
    )
    # [END howto_operator_scriptrunner_run_script]

    # [START howto_operator_scriptrunner_submit_script]
    submit_report = ScriptRunnerSubmitScriptOperator(
        task_id="submit_report", script_id="report", args=["5", "2"]
    )
    # [END howto_operator_scriptrunner_submit_script]
    # [START howto_sensor_scriptrunner_job]
    wait_report = ScriptRunnerJobSensor(
        task_id="wait_report",
        job_id="{{ ti.xcom_pull(task_ids='submit_report') }}",
        deferrable=True,
        poke_interval=1,
        timeout=120,
    )
    # [END howto_sensor_scriptrunner_job]
    # [START howto_operator_scriptrunner_get_job_logs]
    report_logs = ScriptRunnerGetJobLogsOperator(
        task_id="report_logs", job_id="{{ ti.xcom_pull(task_ids='submit_report') }}", stream="both"
    )
    # [END howto_operator_scriptrunner_get_job_logs]

    submit_long = ScriptRunnerSubmitScriptOperator(task_id="submit_long", script_id="sleepy", args=["600"])
    # [START howto_operator_scriptrunner_cancel_job]
    cancel_long = ScriptRunnerCancelJobOperator(
        task_id="cancel_long", job_id="{{ ti.xcom_pull(task_ids='submit_long') }}"
    )
    # [END howto_operator_scriptrunner_cancel_job]

    submit_report >> wait_report >> report_logs
    submit_long >> cancel_long
