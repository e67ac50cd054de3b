"""Apache Airflow provider for script-runner, a small HTTP service that runs whitelisted shell scripts."""

from __future__ import annotations

from typing import Any

#: The one version source: pyproject.toml reads it from here.
__version__ = "0.1.0"

PACKAGE_NAME = "airflow-provider-scriptrunner"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    from airflow_provider_scriptrunner.client.conn_fields import CONN_FIELDS, CONN_TYPE, UI_FIELD_BEHAVIOUR

    behaviour = UI_FIELD_BEHAVIOUR
    return {
        "package-name": PACKAGE_NAME,
        "name": "Script Runner",
        "description": "Run whitelisted shell scripts on a script-runner server from Airflow DAGs.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Script Runner",
                "external-doc-url": "https://github.com/vince-hz/script-runner",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Script Runner",
                "python-modules": ["airflow_provider_scriptrunner.hooks.scriptrunner"],
            }
        ],
        "operators": [
            {
                "integration-name": "Script Runner",
                "python-modules": ["airflow_provider_scriptrunner.operators.scriptrunner"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Script Runner",
                "python-modules": ["airflow_provider_scriptrunner.sensors.scriptrunner"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Script Runner",
                "python-modules": ["airflow_provider_scriptrunner.triggers.scriptrunner"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_scriptrunner.hooks.scriptrunner.ScriptRunnerHook",
                "hook-name": "Script Runner",
                "connection-type": CONN_TYPE,
                "ui-field-behaviour": {
                    "hidden-fields": behaviour["hidden_fields"],
                    "relabeling": behaviour["relabeling"],
                    "placeholders": behaviour["placeholders"],
                },
                "conn-fields": CONN_FIELDS,
            }
        ],
        "task-decorators": [
            {
                "name": "scriptrunner",
                "class-name": "airflow_provider_scriptrunner.decorators.scriptrunner.scriptrunner_task",
            }
        ],
        "extra-links": ["airflow_provider_scriptrunner.operators.scriptrunner.ScriptRunnerJobLink"],
    }
