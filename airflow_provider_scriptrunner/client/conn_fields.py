"""
The fields of a ``scriptrunner`` connection: names, defaults, and the schema the connection form
shows. No imports: the provider info reads this while Airflow is still starting.
"""

from __future__ import annotations

from typing import Any

CONN_TYPE = "scriptrunner"
DEFAULT_PORT = 8080
#: Seconds to wait for each HTTP response (connection extra ``timeout``).
DEFAULT_TIMEOUT = 30.0
#: Extra attempts for transient errors (connection extra ``retries``).
DEFAULT_RETRIES = 3
#: HTTP statuses worth another try of a request that does not start a script.
TRANSIENT_STATUS_CODES = frozenset({429, 502, 503, 504})
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
