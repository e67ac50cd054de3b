"""
Cancel a deferred task's job when a user ends the task before any triggerer has run its trigger.

A trigger that runs decides by itself whether to cancel when it is stopped
(:meth:`~airflow_provider_scriptrunner.triggers.scriptrunner.ScriptRunnerJobTrigger.cancel_decision`).
But when a user marks a deferred task failed or success before a triggerer has started its trigger
(every triggerer down, stopped or at capacity, or the mark within a second of the deferral), the
triggerer deletes the unused trigger without ever running it, and nothing of the provider would
run: the script goes on, orphaned. Airflow's api-server calls the task-instance listeners for
such a state change, in the same request, with the database task instance, which still refers to
its trigger; this listener cancels the trigger's job then (no retries, the connection's timeout).
A second cancel of a job the running trigger canceled too changes nothing on the server.

Registered by :class:`airflow_provider_scriptrunner.plugins.ScriptRunnerPlugin` (entry point
``airflow.plugins``). Listener errors never fail the user's request: they are logged.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

TRIGGER_CLASSPATH = "airflow_provider_scriptrunner.triggers.scriptrunner.ScriptRunnerJobTrigger"


def cancel_job_of_ended_deferral(task_instance: Any, state: str) -> bool:
    """Cancel the job of ``task_instance``'s ScriptRunnerJobTrigger, if it has one; return whether it did."""
    trigger = getattr(task_instance, "trigger", None)  # only the database task instance has one
    if trigger is None or getattr(trigger, "classpath", None) != TRIGGER_CLASSPATH:
        return False
    kwargs = trigger.kwargs
    if not kwargs.get("cancel_on_kill", True) or not kwargs.get("job_id"):
        return False
    from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook

    job_id = kwargs["job_id"]
    try:
        with ScriptRunnerHook(
            kwargs.get("scriptrunner_conn_id") or "scriptrunner_default", retries=0
        ) as hook:
            job = hook.cancel_job(job_id)
    except Exception as err:  # noqa: BLE001 - never fail the user's request
        log.warning(
            "Could not cancel script-runner job %s of %s (marked %s): %s", job_id, task_instance, state, err
        )
        return False
    log.info(
        "Canceled script-runner job %s: %s was marked %s while deferred (status now %s)",
        job_id,
        task_instance,
        state,
        job.status.value,
    )
    return True


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    cancel_job_of_ended_deferral(task_instance, "failed")


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    cancel_job_of_ended_deferral(task_instance, "success")
