"""
Example: retries. A retried task runs its script again as a NEW script-runner job.

``load_flaky_source`` runs ``flaky``, which fails the first time it is called with a given
marker and succeeds the second time; the marker here is the DAG run, so every run fails once.
With ``retries=1`` and ``retry_delay=1 s``:

- try 1 submits job A; it exits 1, so the task fails and goes up_for_retry;
- try 2, a second later, submits job B (a different job id); it exits 0 and the task succeeds.

A retry never reuses a job that has ended. (On Airflow 3.3+, with ``reattach=True``, a retry
that starts while the previous try's job is still queued or running follows that job instead of
starting the script a second time; a job that failed is always started anew.)

Expected outcome: ``load_flaky_source`` succeeds at try_number 2; its return value is job B's
result (exit code 0, stdout ``second try: succeeded``), and job A (failed, exit code 1) is a
different job.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator

with DAG(
    dag_id="example_scriptrunner_retries",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "scriptrunner"],
) as dag:
    load_flaky_source = ScriptRunnerRunScriptOperator(
        task_id="load_flaky_source",
        script_id="flaky",
        args=["{{ dag_run.dag_id }}.{{ run_id }}"],  # one marker per DAG run
        retries=1,
        retry_delay=timedelta(seconds=1),
        poll_interval=1,
    )
