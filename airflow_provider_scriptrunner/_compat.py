"""Imports that moved between Airflow 3.1 and 3.3, resolved once, without deprecation warnings."""

from __future__ import annotations

from typing import Any

from airflow.sdk.execution_time.xcom import XCom

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

try:  # Airflow 3.2+
    from airflow.sdk.bases.decorator import determine_kwargs
except ImportError:  # Airflow 3.1
    from airflow.utils.operator_helpers import determine_kwargs  # type: ignore[no-redef,unused-ignore]


def default_deferrable() -> bool:
    """``[operators] default_deferrable``: the ``deferrable`` default of the run operator and the sensor."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def _listener_manager() -> Any:
    try:  # Airflow 3.2+: the task runner's listener manager
        from airflow.sdk.listener import get_listener_manager
    except ImportError:  # Airflow 3.1
        from airflow.listeners.listener import get_listener_manager  # type: ignore[no-redef,assignment,unused-ignore]
    return get_listener_manager()


#: Listeners that need not hear of a task's end: this provider's own, and Airflow's example
#: listener (registered under ``[core] load_examples``, which only logs).
IGNORED_LISTENER_MODULES = ("airflow_provider_scriptrunner", "airflow.example_dags")


def other_listeners() -> list[str]:
    """The listener plugins of this process, by name, but for :data:`IGNORED_LISTENER_MODULES`."""
    names = []
    for listener in _listener_manager().pm.get_plugins():
        name = getattr(listener, "__name__", None) or type(listener).__name__
        module = getattr(listener, "__module__", None) or name
        if not str(module).startswith(IGNORED_LISTENER_MODULES):
            names.append(str(name))
    return sorted(names)


__all__ = [
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "TaskDeferred",
    "XCom",
    "conf",
    "default_deferrable",
    "determine_kwargs",
    "other_listeners",
]
