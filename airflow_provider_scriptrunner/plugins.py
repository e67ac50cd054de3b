"""The provider's Airflow plugin: it only registers :mod:`airflow_provider_scriptrunner.listener`."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_scriptrunner import listener


class ScriptRunnerPlugin(AirflowPlugin):
    """Loaded through the ``airflow.plugins`` entry point wherever the provider is installed."""

    name = "scriptrunner"
    listeners = [listener]  # noqa: RUF012 - the attribute AirflowPlugin declares
