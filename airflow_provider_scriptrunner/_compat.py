"""Imports that moved between Airflow 3.1 and 3.3, resolved once, without deprecation warnings."""

from __future__ import annotations

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


def default_deferrable() -> bool:
    """``[operators] default_deferrable``: the ``deferrable`` default of the run operator and the sensor."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


__all__ = [
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "TaskDeferred",
    "XCom",
    "conf",
    "default_deferrable",
]
