"""
DAGs for the end-to-end tests (tests/e2e): one run-script task each, driven by the run's conf.

Every run passes ``{"tag": ..., "first_seconds": ..., "first_exit": ..., "later_seconds": ...}``
to the ``work`` script (see tests/e2e/conftest.py): its first run for a tag sleeps
``first_seconds`` and exits ``first_exit``; later runs sleep ``later_seconds`` and exit 0.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator

WORK_ARGS = [
    "{{ dag_run.conf['tag'] }}",
    "{{ dag_run.conf.get('first_seconds', 0) }}",
    "{{ dag_run.conf.get('first_exit', 0) }}",
    "{{ dag_run.conf.get('later_seconds', 0) }}",
]
START = pendulum.datetime(2026, 1, 1, tz="UTC")


def _dag(dag_id: str, doc: str) -> DAG:
    return DAG(
        dag_id=dag_id, schedule=None, start_date=START, catchup=False, doc_md=doc, tags=["scriptrunner-e2e"]
    )


with _dag("e2e_deferrable", "The run-script operator waiting in the triggerer."):
    ScriptRunnerRunScriptOperator(
        task_id="run", script_id="work", args=WORK_ARGS, deferrable=True, poll_interval=1
    )

with _dag("e2e_worker", "The run-script operator waiting in the worker; no retries."):
    ScriptRunnerRunScriptOperator(
        task_id="run", script_id="work", args=WORK_ARGS, deferrable=False, poll_interval=1
    )

with _dag("e2e_worker_retry", "The run-script operator waiting in the worker, with one quick retry."):
    ScriptRunnerRunScriptOperator(
        task_id="run",
        script_id="work",
        args=WORK_ARGS,
        deferrable=False,
        poll_interval=1,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

with _dag("e2e_retries", "Retries only where a retry can help: script_id comes from the run's conf."):
    ScriptRunnerRunScriptOperator(
        task_id="run",
        script_id="{{ dag_run.conf.get('script_id', 'work') }}",
        args=WORK_ARGS,
        deferrable=False,
        poll_interval=1,
        retries=2,
        retry_delay=timedelta(seconds=2),
    )

try:  # Airflow 3.3+: retry policies
    from airflow_provider_scriptrunner.operators.retry_policy import RetryOnExitCodes
except ImportError:  # Airflow 3.1/3.2
    RetryOnExitCodes = None  # type: ignore[assignment,misc]

if RetryOnExitCodes is not None:
    with _dag("e2e_retry_policy", "Retries only on exit code 75 (a retry policy, Airflow 3.3+)."):
        ScriptRunnerRunScriptOperator(
            task_id="run",
            script_id="work",
            args=WORK_ARGS,
            deferrable=False,
            poll_interval=1,
            retries=2,
            retry_delay=timedelta(seconds=2),
            retry_policy=RetryOnExitCodes([75]),
        )
