"""Opt-in pytest fixtures that run a real (bundled) script-runner server for DAG tests.

Enable the plugin in your top-level ``conftest.py``::

    pytest_plugins = ["airflow_provider_scriptrunner.testing.pytest_plugin"]

Then declare the scripts your DAGs call, and use the connection fixture::

    import pytest


    @pytest.fixture
    def scriptrunner_scripts():
        return {
            "nightly-report": {"body": "#!/bin/sh\\necho report for \\"$1\\"\\n", "mode": "async"},
            "slow": {"body": "#!/bin/sh\\nsleep 30\\n", "timeoutSec": 1},
        }


    @pytest.fixture
    def scriptrunner_server_config():
        return {"maxConcurrent": 2}


    def test_report_task(scriptrunner_connection):
        # AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT now points at the server: run the operator or the DAG.
        ...

Every test gets a fresh server in its own ``tmp_path``; it is stopped (with all its scripts) when
the test ends, even when the test fails.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_scriptrunner.testing.harness import HOST, ScriptRunnerServerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

#: The environment variable that defines the provider's default connection (``scriptrunner_default``).
CONNECTION_ENV_VAR = "AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT"


@pytest.fixture
def scriptrunner_scripts() -> dict[str, dict[str, Any]]:
    """The scripts the server whitelists; override this fixture to provide your own.

    Same shape as :class:`~airflow_provider_scriptrunner.testing.harness.ScriptRunnerServerProcess`
    takes: ``{script_id: {"body": "#!/bin/sh\\n...", "mode": ..., "timeoutSec": ..., "args": ...}}``.
    The defaults are ``echo`` (prints its arguments), ``exit`` (exits with the code given as its
    first argument, default 1) and ``sleep`` (sleeps for its first argument, default 30 seconds), all
    ``async`` scripts: a request without ``mode`` gets ``202`` and a job id (the provider's operators
    always send a mode).
    """
    return {
        "echo": {"body": '#!/bin/sh\necho "$@"\n', "mode": "async"},
        "exit": {"body": '#!/bin/sh\necho "exiting with ${1:-1}" >&2\nexit "${1:-1}"\n', "mode": "async"},
        "sleep": {
            "body": '#!/bin/sh\nsleep "${1:-30}"\n',
            "mode": "async",
            "args": {"itemPattern": "^[0-9.]+$"},
        },
    }


@pytest.fixture
def scriptrunner_server_config() -> dict[str, Any]:
    """Overrides for the server's ``runner`` section; override this fixture to change them.

    For example ``{"maxConcurrent": 2, "defaultMode": "async", "maxLogBytesPerStream": 1000}``.
    The default, ``{}``, keeps the real server's defaults (one script at a time, ``sync`` default
    mode, cancel and timeout send SIGTERM only); ``killGraceSec`` (bundled server only) adds a SIGKILL
    that many seconds after that SIGTERM.
    """
    return {}


@pytest.fixture
def scriptrunner_server(
    tmp_path: Path,
    scriptrunner_scripts: dict[str, dict[str, Any]],
    scriptrunner_server_config: dict[str, Any],
) -> Iterator[ScriptRunnerServerProcess]:
    """A running bundled server with :func:`scriptrunner_scripts`, stopped after the test.

    Use ``scriptrunner_server.url`` for direct HTTP calls, or
    :meth:`~airflow_provider_scriptrunner.testing.ScriptRunnerServerProcess.restart` /
    :meth:`~airflow_provider_scriptrunner.testing.ScriptRunnerServerProcess.kill` to exercise
    restart and crash handling.
    """
    with ScriptRunnerServerProcess(
        tmp_path / "scriptrunner", scriptrunner_scripts, runner=scriptrunner_server_config
    ) as server:
        yield server


@pytest.fixture
def scriptrunner_connection(
    scriptrunner_server: ScriptRunnerServerProcess, monkeypatch: pytest.MonkeyPatch
) -> ScriptRunnerServerProcess:
    """:func:`scriptrunner_server`, with the ``scriptrunner_default`` connection pointing at it.

    Sets ``AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT`` to the JSON connection form for the duration of the
    test, so hooks, operators and sensors using the default connection id talk to this server.
    """
    connection = {
        "conn_type": "scriptrunner",
        "host": HOST,
        "port": scriptrunner_server.port,
        "schema": "http",
    }
    monkeypatch.setenv(CONNECTION_ENV_VAR, json.dumps(connection))  # monkeypatch undoes it
    return scriptrunner_server
