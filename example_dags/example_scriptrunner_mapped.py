"""
Example: one task per argument set, with dynamic task mapping.

``greet_each`` is a single :class:`ScriptRunnerRunScriptOperator` expanded over three argument
lists: Airflow creates one mapped task instance (and one script-runner job) per list.
Everything that is the same for all of them goes into ``partial()``; only ``args`` varies.
``count_greetings`` receives the results of all mapped instances, in map-index order.

Expected outcome: ``greet_each`` has 3 mapped instances (map indexes 0, 1, 2), all successful,
greeting 1, 2 and 3 names; each returns its own job id. ``count_greetings`` returns 6.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator

TEAMS = [["Ada"], ["Grace", "Linus"], ["Ken", "Barbara", "Edsger"]]

with DAG(
    dag_id="example_scriptrunner_mapped",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "scriptrunner"],
) as dag:
    greet_each = ScriptRunnerRunScriptOperator.partial(
        task_id="greet_each",
        script_id="greet",
        poll_interval=1,
        map_index_template="{{ task.args | join(', ') }}",  # how each instance is labelled in the UI
    ).expand(args=TEAMS)

    @task
    def count_greetings(results: list[dict]) -> int:
        return sum(result["stdout"].count("Hello, ") for result in results)

    count_greetings(greet_each.output)
