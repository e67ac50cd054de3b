"""The provider's Airflow plugin: it only registers :mod:`airflow_provider_scriptrunner.listener`."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_scriptrunner import listener
from airflow_provider_scriptrunner._compat import TRIGGER_HAS_ON_KILL


class ScriptRunnerPlugin(AirflowPlugin):
    """
    Loaded through the ``airflow.plugins`` entry point wherever the provider is installed.

    The listener is registered on Airflow 3.3+ only, where it was shown on real deployments: on
    3.1.8 a cancel from the api-server while the trigger still ran broke the triggerer's next
    trigger (tests/e2e, ``make e2e-31``); there the trigger's own cancel path applies alone.
    """

    name = "scriptrunner"
    listeners = [listener] if TRIGGER_HAS_ON_KILL else []
