"""
DAGs for the deferred-mode end-to-end tests (tests/e2e/test_deferred_mode_e2e.py): one run-script
task each, calling the ``work`` script with the run's conf, as in e2e_scriptrunner_dags.py.

- ``e2e_deferred_execution_timeout`` / ``e2e_worker_execution_timeout``: ``execution_timeout`` of
  20 s, waiting in the triggerer / in the worker.
- ``e2e_deferred_live_output``: a plain deferrable task, for live output and clear-while-deferred.
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
EXECUTION_TIMEOUT = timedelta(seconds=20)


def _dag(dag_id: str, doc: str) -> DAG:
    return DAG(
        dag_id=dag_id, schedule=None, start_date=START, catchup=False, doc_md=doc, tags=["scriptrunner-e2e"]
    )


with _dag("e2e_deferred_execution_timeout", "Deferrable, execution_timeout=20 s; no retries."):
    ScriptRunnerRunScriptOperator(
        task_id="run",
        script_id="work",
        args=WORK_ARGS,
        deferrable=True,
        poll_interval=1,
        execution_timeout=EXECUTION_TIMEOUT,
    )

with _dag("e2e_worker_execution_timeout", "In the worker, execution_timeout=20 s; no retries."):
    ScriptRunnerRunScriptOperator(
        task_id="run",
        script_id="work",
        args=WORK_ARGS,
        deferrable=False,
        poll_interval=1,
        execution_timeout=EXECUTION_TIMEOUT,
    )

with _dag("e2e_deferred_live_output", "Deferrable; the script's output is followed by the trigger."):
    ScriptRunnerRunScriptOperator(
        task_id="run", script_id="work", args=WORK_ARGS, deferrable=True, poll_interval=1
    )
