"""
The connection form as the real api-server serves it to the UI (``/ui/connections/hook_meta``),
and the connection test behind the form's Test button (``POST /api/v2/connections/test``, which
needs ``[core] test_connection = Enabled``).
"""

from __future__ import annotations

import pytest

from airflow_provider_scriptrunner import get_provider_info
from airflow_provider_scriptrunner.client.conn_fields import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from tests.e2e.deployment import HOST, free_port

pytestmark = pytest.mark.e2e

#: hook_meta's names for the standard fields that ui-field-behaviour may hide or relabel.
STANDARD_FIELD_NAMES = {
    "schema": "url_schema",
    "host": "host",
    "port": "port",
    "login": "login",
    "password": "password",
}


@pytest.fixture(scope="module")
def script_runner_meta(api):
    meta = api.request("GET", "/ui/connections/hook_meta")
    entries = [entry for entry in meta if entry["connection_type"] == "scriptrunner"]
    assert len(entries) == 1, [entry["connection_type"] for entry in meta]
    return entries[0]


def test_hook_meta_lists_script_runner_as_declared_in_provider_info(script_runner_meta):
    (declared,) = get_provider_info()["connection-types"]
    assert script_runner_meta["hook_name"] == declared["hook-name"] == "Script Runner"
    assert script_runner_meta["hook_class_name"] == declared["hook-class-name"]

    extra = script_runner_meta["extra_fields"]
    assert set(extra) == set(CONN_FIELDS)
    for name, field in CONN_FIELDS.items():
        assert extra[name]["schema"]["title"] == field["label"], name
        assert extra[name]["description"] == field["description"], name
        assert extra[name]["value"] == field["schema"].get("default"), name

    standard = script_runner_meta["standard_fields"]
    behaviour = declared["ui-field-behaviour"]
    for field, name in STANDARD_FIELD_NAMES.items():
        assert standard[name]["hidden"] is (field in behaviour["hidden-fields"]), field
        assert standard[name]["title"] == behaviour["relabeling"].get(field), field
        assert standard[name]["placeholder"] == (
            None if field in behaviour["hidden-fields"] else behaviour["placeholders"].get(field)
        ), field
    assert standard["url_schema"]["hidden"] is True  # "schema" is hidden: the scheme goes in Host
    assert UI_FIELD_BEHAVIOUR["hidden_fields"] == behaviour["hidden-fields"]


def test_connection_test_reports_a_healthy_server(api, scriptrunner):
    body = {
        "connection_id": "scriptrunner_e2e_test",
        "conn_type": "scriptrunner",
        "host": HOST,
        "port": scriptrunner.port,
    }
    result = api.request("POST", "/api/v2/connections/test", json=body)
    assert result == {"status": True, "message": f"script-runner at {scriptrunner.url}/healthz is healthy"}


def test_connection_test_reports_a_closed_port_clearly(api):
    port = free_port()  # bound and released: nothing listens there
    body = {
        "connection_id": "scriptrunner_e2e_closed",
        "conn_type": "scriptrunner",
        "host": HOST,
        "port": port,
        "extra": '{"retries": 0}',
    }
    result = api.request("POST", "/api/v2/connections/test", json=body)
    assert result["status"] is False
    assert result["message"].startswith(f"Could not connect to http://{HOST}:{port}/healthz"), result
    assert "is script-runner running there, and are Host and Port right?" in result["message"]
