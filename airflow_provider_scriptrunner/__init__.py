"""Apache Airflow provider for script-runner, a small HTTP service that runs whitelisted shell scripts."""

from __future__ import annotations

from typing import Any

from airflow_provider_scriptrunner.constants import (
    DEFAULT_PORT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    TRANSIENT_STATUS_CODES,
)

#: The one version source: pyproject.toml reads it from here.
__version__ = "0.1.0"

PACKAGE_NAME = "airflow-provider-scriptrunner"

#: Relabelled, hidden and placeholder fields of the connection form, in the hook-method form
#: (Airflow 3.1). ``get_provider_info`` carries the same in the provider-info form (3.2+).
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    # The scheme goes in Host as a URL (https://...); Schema stays usable from URI/JSON connections.
    "hidden_fields": ["schema"],
    "relabeling": {
        "host": "Host or base URL",
        "login": "Login (HTTP Basic, optional)",
        "password": "API token, or password with Login (optional)",
    },
    "placeholders": {
        "host": "localhost, or https://proxy.example/script-runner",
        "port": str(DEFAULT_PORT),
        "login": "only for HTTP Basic behind a proxy",
        "password": "sent as 'Authorization: Bearer <token>' when Login is empty",
        "timeout": f"{DEFAULT_TIMEOUT:g}",
        "ca_bundle": "/etc/ssl/certs/internal-ca.pem",
        "headers": '{"X-Team": "data"}',
        "retries": str(DEFAULT_RETRIES),
    },
}

#: Extra fields of the connection, stored in Connection.extra (provider-info form, Airflow 3.2+).
CONN_FIELDS: dict[str, Any] = {
    "timeout": {
        "label": "Request timeout (seconds)",
        "description": f"Seconds to wait for each HTTP response (default {DEFAULT_TIMEOUT:g}).",
        "schema": {"type": ["number", "null"], "default": DEFAULT_TIMEOUT, "minimum": 0},
    },
    "verify_ssl": {
        "label": "Verify TLS certificate",
        "description": "Check the server's certificate for https URLs (default true).",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "ca_bundle": {
        "label": "CA bundle path",
        "description": "Path to a PEM file of CAs to trust instead of the system ones, e.g. /etc/ssl/certs/internal-ca.pem.",
        "schema": {"type": ["string", "null"]},
    },
    "headers": {
        "label": "Extra HTTP headers (JSON object)",
        "description": 'Headers added to every request, e.g. {"X-Team": "data"} for a proxy.',
        "schema": {"type": ["string", "null"], "format": "json"},
    },
    "retries": {
        "label": "Retry attempts for transient errors",
        "description": (
            f"Extra attempts after connect errors, timeouts, {', '.join(map(str, sorted(TRANSIENT_STATUS_CODES)))} "
            f"(default {DEFAULT_RETRIES})."
        ),
        "schema": {"type": ["integer", "null"], "default": DEFAULT_RETRIES, "minimum": 0},
    },
}


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    behaviour = UI_FIELD_BEHAVIOUR
    return {
        "package-name": PACKAGE_NAME,
        "name": "Script Runner",
        "description": "Run whitelisted shell scripts on a script-runner server from Airflow DAGs.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Script Runner",
                "external-doc-url": "https://pypi.org/project/airflow-provider-scriptrunner/",
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
                "connection-type": "scriptrunner",
                "ui-field-behaviour": {
                    "hidden-fields": behaviour["hidden_fields"],
                    "relabeling": behaviour["relabeling"],
                    "placeholders": behaviour["placeholders"],
                },
                "conn-fields": CONN_FIELDS,
            }
        ],
        "extra-links": ["airflow_provider_scriptrunner.operators.scriptrunner.ScriptRunnerJobLink"],
    }
