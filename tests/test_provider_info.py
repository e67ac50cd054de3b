"""Provider registration: entry point, provider info, connection form metadata (3.2+ conn-fields and 3.1 hook methods)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from airflow_provider_scriptrunner import PACKAGE_NAME, get_provider_info
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook

AIRFLOW_VERSION = tuple(int(p) for p in importlib.metadata.version("apache-airflow").split(".")[:2])


def test_entry_point_points_at_get_provider_info():
    eps = [
        ep
        for ep in importlib.metadata.entry_points(group="apache_airflow_provider")
        if ep.value.startswith("airflow_provider_scriptrunner")
    ]
    assert len(eps) == 1
    assert eps[0].load() is get_provider_info
    assert eps[0].dist.name == PACKAGE_NAME


@pytest.mark.parametrize(
    "module",
    [
        "airflow_provider_scriptrunner.client.errors",
        "airflow_provider_scriptrunner.client.api",
        "airflow_provider_scriptrunner.hooks.scriptrunner",
    ],
)
def test_the_package_can_be_imported_before_airflow(tmp_path, module):
    # Importing Airflow loads its configuration, which calls every provider's get_provider_info: a
    # get_provider_info that imports a module on the way to importing Airflow meets it half-built.
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}, airflow; print('imported')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "imported"


def test_provider_info_matches_the_airflow_schema():
    import jsonschema

    schema_path = os.path.join(os.path.dirname(__import__("airflow").__file__), "provider_info.schema.json")
    with open(schema_path) as f:
        schema = json.load(f)
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-scriptrunner"
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "scriptrunner"
    assert conn_type["hook-class-name"] == "airflow_provider_scriptrunner.hooks.scriptrunner.ScriptRunnerHook"


def test_a_hook_without_a_connection_id_uses_scriptrunner_default(monkeypatch, requests_mock):
    # The default connection id is what Airflow's form and `airflow connections` create for the type.
    monkeypatch.setenv(
        "AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT",
        json.dumps({"conn_type": "scriptrunner", "host": "sr.default", "port": 9999}),
    )
    requests_mock.get("http://sr.default:9999/healthz", json={"ok": True})
    assert ScriptRunnerHook().health() == {"ok": True}
    assert ScriptRunnerHook.get_ui_field_behaviour()["hidden_fields"] == ["schema"]


def test_providers_manager_sees_hook_and_connection_type():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert PACKAGE_NAME in manager.providers
    hook = manager.hooks["scriptrunner"]
    assert hook.hook_class_name == "airflow_provider_scriptrunner.hooks.scriptrunner.ScriptRunnerHook"
    assert hook.connection_id_attribute_name == "scriptrunner_conn_id"


HOOK_META_SCRIPT = """
import json
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
(meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "scriptrunner"]
print(json.dumps(meta.model_dump(mode="json")))
"""


def _hook_meta(tmp_path) -> dict:
    # A fresh process: ProvidersManager caches hooks, and 3.1 only mocks wtforms on its first load.
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", HOOK_META_SCRIPT], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_connection_form_metadata_lists_custom_fields(tmp_path):
    """What /ui/connections/hook_meta serves: on 3.2+ from conn-fields, on 3.1 from the hook methods."""
    meta = _hook_meta(tmp_path)
    assert meta["hook_name"] == "Script Runner"
    fields = {name.rsplit("__", 1)[-1]: value for name, value in meta["extra_fields"].items()}
    assert set(fields) == {"timeout", "verify_ssl", "ca_bundle", "headers", "retries"}
    assert fields["timeout"]["schema"]["title"] == "Request timeout (seconds)"
    assert fields["verify_ssl"]["schema"]["type"][0] == "boolean"
    assert fields["retries"]["schema"]["type"][0] == "integer"
    standard = meta["standard_fields"]
    assert standard["host"]["title"] == "Host or base URL"
    assert standard["password"]["title"].startswith("API token")
    assert standard["host"]["placeholder"].startswith("localhost")
    assert standard["url_schema"]["hidden"] is True
    assert standard["port"]["hidden"] is False


@pytest.mark.skipif(
    AIRFLOW_VERSION >= (3, 2), reason="Airflow 3.1 only: 3.2+ reads conn-fields instead of the hook methods"
)
def test_airflow_31_reads_the_hook_methods():
    info = get_provider_info()
    assert "conn-fields" in info["connection-types"][0]  # present, but 3.1 ignores it ...
    from airflow.providers_manager import ProvidersManager

    assert not hasattr(ProvidersManager, "_load_ui_metadata")  # ... because it has no reader for it


def test_airflow_cli_lists_provider_and_hook(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow = [sys.executable, "-m", "airflow"]
    providers = subprocess.run(
        [*airflow, "providers", "list", "-o", "json"], env=env, capture_output=True, text=True, timeout=180
    )
    assert providers.returncode == 0, providers.stderr[-2000:]
    assert PACKAGE_NAME in {p["package_name"] for p in json.loads(providers.stdout)}
    hooks = subprocess.run(
        [*airflow, "providers", "hooks", "-o", "json"], env=env, capture_output=True, text=True, timeout=180
    )
    assert hooks.returncode == 0, hooks.stderr[-2000:]
    assert "airflow_provider_scriptrunner.hooks.scriptrunner.ScriptRunnerHook" in hooks.stdout
