"""
Cancel a deferred task's job when a user ends the task before any triggerer has run its trigger.

A trigger that runs decides by itself whether to cancel when it is stopped
(:meth:`~airflow_provider_scriptrunner.triggers.scriptrunner.ScriptRunnerJobTrigger.cancel_verdict`).
But when a user marks a deferred task failed or success before a triggerer has started its trigger
(every triggerer down, stopped or at capacity, or the mark within a second of the deferral), the
triggerer deletes the unused trigger without ever running it, and nothing of the provider would
run: the script goes on, orphaned. Airflow's api-server calls the task-instance listeners for
such a state change, in the same request, with the database task instance, which still refers to
its trigger; this listener rebuilds the trigger from its stored kwargs and cancels its job when
:func:`~airflow_provider_scriptrunner.task.ownership.cancel_verdict` says so (no retries, the
connection's timeout).
A second cancel of a job the running trigger canceled too changes nothing on the server.

Registered by :class:`airflow_provider_scriptrunner.plugins.ScriptRunnerPlugin` (entry point
``airflow.plugins``). Listener errors never fail the user's request: they are logged.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook
from airflow_provider_scriptrunner.task.ownership import Owner, cancel_verdict
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger

log = logging.getLogger(__name__)

TRIGGER_CLASSPATH = f"{ScriptRunnerJobTrigger.__module__}.{ScriptRunnerJobTrigger.__qualname__}"


def cancel_job_of_ended_deferral(task_instance: Any, state: str) -> bool:
    """Cancel the job of ``task_instance``'s ScriptRunnerJobTrigger, if it has one; return whether it did."""
    row = getattr(task_instance, "trigger", None)  # only the database task instance has one
    if row is None or getattr(row, "classpath", None) != TRIGGER_CLASSPATH:
        return False
    try:
        trigger = ScriptRunnerJobTrigger(**row.kwargs)
    except Exception as err:  # noqa: BLE001 - never fail the user's request
        log.warning("Could not read the script-runner trigger of %s: %s", task_instance, err)
        return False
    # The user ended the task on its current try, which owns the trigger's job.
    try_number = getattr(task_instance, "try_number", None)
    verdict = cancel_verdict(
        cancel_on_kill=trigger.cancel_on_kill,
        state=state,
        own_try=try_number,
        own_job=trigger.job_id,
        owner=None if try_number is None else Owner(try_number, trigger.job_id),
        deadline_passed=False,
    )
    if not verdict.cancel:
        return False
    try:
        with ScriptRunnerHook(trigger.scriptrunner_conn_id, retries=0) as hook:
            job = hook.cancel_job(trigger.job_id)
    except Exception as err:  # noqa: BLE001 - never fail the user's request
        log.warning(
            "Could not cancel script-runner job %s of %s (marked %s): %s",
            trigger.job_id,
            task_instance,
            state,
            err,
        )
        return False
    log.info(
        "Canceled script-runner job %s: %s was marked %s while deferred (status now %s)",
        trigger.job_id,
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
