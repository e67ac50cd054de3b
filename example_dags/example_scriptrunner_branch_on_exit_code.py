"""
Example: take a different path depending on a script's exit code.

``check_freshness`` runs a data check whose exit code is its verdict: 0 means "fresh", 3 means
"stale, refresh first", anything else is a real failure. (The ``exit-with`` script stands in for
the check and exits with the code it is given: the ``exit_code`` param, 3 by default.)

- ``skip_on_exit_code=3`` turns "stale" into a SKIPPED check instead of a failed one.
- ``publish`` has the default trigger rule (all_success): it runs only after exit code 0 and is
  skipped with the check.
- ``refresh`` has ``trigger_rule=ALL_SKIPPED``: it runs only when the check was skipped (exit 3).
- ``announce`` joins the paths with ``NONE_FAILED_MIN_ONE_SUCCESS`` and says which one ran.

Any other exit code fails ``check_freshness``; ``publish`` and ``announce`` end upstream_failed,
``refresh`` is skipped, and the run fails.

Expected outcome with the default ``exit_code`` 3: ``check_freshness`` skipped, ``publish``
skipped, ``refresh`` success, ``announce`` success returning ``"refreshed"``; the run succeeds.
(Triggered with ``{"exit_code": 0}``: ``publish`` runs, ``refresh`` is skipped, ``announce``
returns ``"published"``.)
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, TriggerRule, task

from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator

STALE = 3

with DAG(
    dag_id="example_scriptrunner_branch_on_exit_code",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "exit_code": Param(
            STALE, type="integer", minimum=0, maximum=255, description="exit code of the check"
        )
    },
    tags=["example", "scriptrunner"],
) as dag:
    # [START howto_operator_scriptrunner_skip_on_exit_code]
    check_freshness = ScriptRunnerRunScriptOperator(
        task_id="check_freshness",
        script_id="exit-with",
        args=["{{ params.exit_code }}"],
        skip_on_exit_code=STALE,
        poll_interval=1,
    )
    # [END howto_operator_scriptrunner_skip_on_exit_code]

    publish = ScriptRunnerRunScriptOperator(
        task_id="publish", script_id="greet", args=["readers"], poll_interval=1
    )

    refresh = ScriptRunnerRunScriptOperator(
        task_id="refresh",
        script_id="report",
        args=["3", "0"],
        trigger_rule=TriggerRule.ALL_SKIPPED,
        poll_interval=1,
    )

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def announce(published: dict | None, refreshed: dict | None) -> str:
        # A skipped task leaves no return value: exactly one of the two is set here.
        return "published" if published else "refreshed"

    check_freshness >> [publish, refresh]
    announce(publish.output, refresh.output)
