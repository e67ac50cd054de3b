"""
DAGs for the distributed end-to-end tests (tests/e2e_distributed): run-script tasks driven by
the run's conf, as in tests/e2e/dags: ``{"tag", "first_seconds", "first_exit", "later_seconds"}``
go to the ``work`` script (see tests/e2e/observe.py), whose first run for a tag sleeps
``first_seconds`` and exits ``first_exit``, and whose later runs sleep ``later_seconds``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator

WORK_ARGS = [
    "{{ dag_run.conf['tag'] }}",
    "{{ dag_run.conf.get('first_seconds', 0) }}",
    "{{ dag_run.conf.get('first_exit', 0) }}",
    "{{ dag_run.conf.get('later_seconds', 0) }}",
]
START = pendulum.datetime(2026, 1, 1, tz="UTC")
#: execution_timeout of ``dist_deferrable_timeout`` (the test reads it from here).
EXECUTION_TIMEOUT = timedelta(seconds=20)


def _dag(dag_id: str, doc: str, **kwargs) -> DAG:
    return DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=START,
        catchup=False,
        doc_md=doc,
        tags=["scriptrunner-e2e"],
        **kwargs,
    )


with _dag("dist_deferrable", "The run-script operator waiting in a triggerer."):
    ScriptRunnerRunScriptOperator(
        task_id="run", script_id="work", args=WORK_ARGS, deferrable=True, poll_interval=1
    )

with _dag("dist_worker_retry", "The run-script operator waiting in a Celery worker, with one quick retry."):
    ScriptRunnerRunScriptOperator(
        task_id="run",
        script_id="work",
        args=WORK_ARGS,
        deferrable=False,
        poll_interval=1,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

with _dag(
    "dist_deferrable_timeout", "A deferred run-script task whose execution_timeout passes while it waits."
):
    ScriptRunnerRunScriptOperator(
        task_id="run",
        script_id="work",
        args=WORK_ARGS,
        deferrable=True,
        poll_interval=1,
        execution_timeout=EXECUTION_TIMEOUT,
    )

with _dag(
    "dist_mapped", "conf['count'] mapped deferrable run-script tasks, one tag each.", max_active_tasks=64
):

    @task
    def work_args(dag_run=None) -> list[list[str]]:
        conf = dag_run.conf
        return [[f"{conf['tag']}-{i}", str(conf["seconds"]), "0", "0"] for i in range(int(conf["count"]))]

    ScriptRunnerRunScriptOperator.partial(
        task_id="run", script_id="work", deferrable=True, poll_interval=2
    ).expand(args=work_args())
