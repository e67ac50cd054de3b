"""
DAGs for the end-in-the-triggerer tests (tests/e2e/test_trigger_end_e2e.py): the run-script
operator with ``deferrable=True`` and ``end_in_triggerer`` on or off, calling the ``work`` script
with the run's conf: ``{"tag", "first_seconds", "first_exit", "later_seconds", "lines",
"later_exit"}`` (see tests/e2e/observe.py).

- ``e2e_trigger_end`` / ``e2e_trigger_end_off``: ``end_in_triggerer`` True / False, exit code 3
  skips, one quick retry; a downstream task reads the return value through XCom.
- ``e2e_trigger_end_measure_on`` / ``e2e_trigger_end_measure_off``: the run task alone, for the
  before/after measurement (no downstream worker start to count or to compete for slots).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator

WORK_ARGS = [
    "{{ dag_run.conf['tag'] }}",
    "{{ dag_run.conf.get('first_seconds', 0) }}",
    "{{ dag_run.conf.get('first_exit', 0) }}",
    "{{ dag_run.conf.get('later_seconds', 0) }}",
    "{{ dag_run.conf.get('lines', 0) }}",
    "{{ dag_run.conf.get('later_exit', 0) }}",
]
START = pendulum.datetime(2026, 1, 1, tz="UTC")
SKIP_EXIT_CODE = 3


def _dag(dag_id: str, doc: str) -> DAG:
    return DAG(
        dag_id=dag_id, schedule=None, start_date=START, catchup=False, doc_md=doc, tags=["scriptrunner-e2e"]
    )


@task
def consume(result: dict[str, Any]) -> dict[str, Any]:
    """What a downstream task receives: the value itself, and the Python type it arrived as."""
    return {"type": type(result).__name__, "value": result}


for dag_id, end_in_triggerer in (("e2e_trigger_end", True), ("e2e_trigger_end_off", False)):
    with _dag(dag_id, f"Deferrable, end_in_triggerer={end_in_triggerer}; exit 3 skips; one retry."):
        run = ScriptRunnerRunScriptOperator(
            task_id="run",
            script_id="work",
            args=WORK_ARGS,
            deferrable=True,
            end_in_triggerer=end_in_triggerer,
            poll_interval=1,
            skip_on_exit_code=SKIP_EXIT_CODE,
            retries=1,
            retry_delay=timedelta(seconds=1),
        )
        consume(run.output)

for dag_id, end_in_triggerer in (
    ("e2e_trigger_end_measure_on", True),
    ("e2e_trigger_end_measure_off", False),
):
    with _dag(dag_id, f"Deferrable, end_in_triggerer={end_in_triggerer}, nothing downstream."):
        ScriptRunnerRunScriptOperator(
            task_id="run",
            script_id="work",
            args=WORK_ARGS,
            deferrable=True,
            end_in_triggerer=end_in_triggerer,
            poll_interval=1,
        )
