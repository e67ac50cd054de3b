"""Imports that moved between Airflow 3.1 and 3.3, resolved once, without deprecation warnings."""

from __future__ import annotations

from airflow.sdk.execution_time.xcom import XCom
from airflow.triggers.base import BaseTrigger

try:  # Airflow 3.2+ (task-sdk 1.2+)
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
        TaskDeferred,
    )
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
        TaskDeferred,
    )

try:  # Airflow 3.2+
    from airflow.sdk import conf
except ImportError:  # Airflow 3.1
    from airflow.configuration import conf  # type: ignore[no-redef,assignment,unused-ignore]


def default_deferrable() -> bool:
    """``[operators] default_deferrable``: the ``deferrable`` default of the run operator and the sensor."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


#: Airflow 3.3+ triggerers call ``BaseTrigger.on_kill`` when a user marks a deferred task
#: failed/success or clears it; older ones only cancel the trigger's task.
TRIGGER_HAS_ON_KILL = "on_kill" in BaseTrigger.__dict__

try:  # Airflow 3.3+: context["task_state_store"], shared by the tries of a task
    from airflow.sdk.execution_time.context import TaskStateStoreAccessor  # noqa: F401

    HAS_TASK_STATE_STORE = True
except ImportError:  # Airflow 3.1/3.2
    HAS_TASK_STATE_STORE = False

__all__ = [
    "HAS_TASK_STATE_STORE",
    "TRIGGER_HAS_ON_KILL",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "TaskDeferred",
    "XCom",
    "conf",
    "default_deferrable",
]
