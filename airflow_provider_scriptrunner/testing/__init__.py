"""Test support for the script-runner provider; not used at runtime.

* :mod:`~airflow_provider_scriptrunner.testing.server`: a script-runner compatible HTTP server
  (standard library only), ``python -m airflow_provider_scriptrunner.testing.server --config PATH``.
* :mod:`~airflow_provider_scriptrunner.testing.harness`: :class:`ScriptRunnerServerProcess`, which
  runs that server in a subprocess from tests and cleans up every process it started.
* :mod:`~airflow_provider_scriptrunner.testing.pytest_plugin`: opt-in fixtures for DAG authors
  (``pytest_plugins = ["airflow_provider_scriptrunner.testing.pytest_plugin"]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_scriptrunner.testing.harness import (
        ScriptRunnerServerError,
        ScriptRunnerServerProcess,
        process_alive,
        process_group_alive,
    )

__all__ = [
    "ScriptRunnerServerError",
    "ScriptRunnerServerProcess",
    "process_alive",
    "process_group_alive",
]


def __getattr__(name: str) -> Any:
    # Imported lazily: ``python -m airflow_provider_scriptrunner.testing.server`` imports this
    # package first, and an eager import of the server module here would load it twice.
    if name in __all__:
        from airflow_provider_scriptrunner.testing import harness

        return getattr(harness, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
