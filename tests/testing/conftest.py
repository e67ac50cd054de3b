"""Fixtures for the script-runner contract tests and the harness tests.

``test_server_contract.py`` checks the HTTP contract over real loopback HTTP. By default it runs
against the bundled server (``airflow_provider_scriptrunner.testing.server``), started once per test
session with the scripts in ``contract_scripts.json``.

To check a real script-runner deployment instead, set ``SCRIPTRUNNER_URL`` (e.g.
``SCRIPTRUNNER_URL=http://127.0.0.1:8080 pytest tests/testing``). That deployment must whitelist the
scripts listed in ``tests/testing/contract_scripts.json``: use that file as its ``scriptsFile``, with
the ``contract_scripts/`` directory next to it. Tests that need a particular server configuration
(``maxConcurrent`` 1, small log limits, ``defaultMode``), look at the script processes, or restart the
server only run against the bundled server and are skipped, with the reason, under ``SCRIPTRUNNER_URL``.

The plugin fixtures (``scriptrunner_server`` and friends) are imported here so that the harness tests
can exercise them exactly as a DAG author's conftest would.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_scriptrunner.testing.harness import ScriptRunnerServerProcess
from airflow_provider_scriptrunner.testing.pytest_plugin import (  # noqa: F401 (fixtures)
    scriptrunner_connection,
    scriptrunner_scripts,
    scriptrunner_server,
    scriptrunner_server_config,
)

CONTRACT_SCRIPTS = Path(__file__).parent / "contract_scripts.json"
TERMINAL = ("succeeded", "failed", "timed_out", "canceled")

#: Runner settings of the bundled "limited" server; the tests that use it rely on these numbers.
LIMITED_RUNNER = {
    "maxConcurrent": 1,
    "maxLogBytesPerStream": 1200,
    "previewMaxBytes": 100,
    "defaultMode": "async",  # not the server default, so that applying it shows
    "killGraceSec": 1,
}


@dataclass
class ContractServer:
    """Where the contract tests send requests; ``process`` is ``None`` for an external deployment."""

    url: str
    process: ScriptRunnerServerProcess | None

    @property
    def bundled(self) -> bool:
        return self.process is not None


class Api:
    """A thin requests client for script-runner with polling helpers for tests.

    Jobs started through it are canceled (and awaited) at teardown, so a failing test does not leave
    a 30-second sleeper occupying a real server's only slot.
    """

    def __init__(self, url: str, bundled: bool = True) -> None:
        self.url = url.rstrip("/")
        self.bundled = bundled
        self.session = requests.Session()
        self._job_ids: list[str] = []

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, **kwargs)

    def run(
        self, script_id: str, args: list[Any] | None = None, mode: str | None = None
    ) -> requests.Response:
        body: dict[str, Any] = {"scriptId": script_id}
        if args is not None:
            body["args"] = args
        if mode is not None:
            body["mode"] = mode
        response = self.request("POST", "/run", json=body)
        if response.ok:
            self._job_ids.append(response.json()["jobId"])
        return response

    def start(self, script_id: str, args: list[Any] | None = None) -> str:
        """Start a job asynchronously and return its id."""
        response = self.run(script_id, args, mode="async")
        assert response.status_code == 202, response.text
        return response.json()["jobId"]

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.request("GET", f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def logs(self, job_id: str, **params: Any) -> requests.Response:
        return self.request("GET", f"/jobs/{job_id}/logs", params=params)

    def cancel(self, job_id: str) -> requests.Response:
        return self.request("POST", f"/jobs/{job_id}/cancel")

    def wait_for(
        self,
        job_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10,
        what: str = "condition",
    ) -> dict[str, Any]:
        """Poll the job until ``predicate(job)`` holds; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if predicate(job):
                return job
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not reached within {timeout}s: {job}")
            time.sleep(0.02)

    def wait_terminal(self, job_id: str, timeout: float = 10) -> dict[str, Any]:
        return self.wait_for(job_id, lambda job: job["status"] in TERMINAL, timeout, "terminal status")

    def wait_pid(self, job_id: str, timeout: float = 10) -> int:
        """The pid a contract script prints as its first line (``pid=N``)."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.match(r"pid=(\d+)\n", self.logs(job_id).json()["data"])
            if match:
                return int(match.group(1))
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} printed no pid within {timeout}s")
            time.sleep(0.02)

    def close(self) -> None:
        try:
            for job_id in self._job_ids:
                response = self.cancel(job_id)
                if response.ok and response.json()["status"] not in TERMINAL:
                    self.wait_terminal(job_id)
        except requests.ConnectionError:
            pass  # the test already stopped its own server, and every script with it
        finally:
            self.session.close()


def _bundled_server(directory: Path, runner: dict[str, Any]) -> ScriptRunnerServerProcess:
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "runner": {"jobStoreFile": "state/jobs.json", "logsDir": "state/logs", **runner},
        "scriptsFile": str(CONTRACT_SCRIPTS),
    }
    config_path = directory / "config.json"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return ScriptRunnerServerProcess(directory, config_path=config_path)


@pytest.fixture(scope="session")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContractServer]:
    """The server under test: ``SCRIPTRUNNER_URL``, or the bundled server with default limits.

    The bundled one allows 4 concurrent scripts and keeps 4 MiB per stream, so that a log page can be
    capped at 1 MiB and an unfinished test job never blocks the next test. It sets no ``defaultMode``
    and no ``killGraceSec``: the tests of the default mode and of cancel-sends-SIGTERM-only rely on that.
    """
    external = os.environ.get("SCRIPTRUNNER_URL")
    if external:
        yield ContractServer(external.rstrip("/"), None)
        return
    runner = {"maxConcurrent": 4, "maxLogBytesPerStream": 4 * 1024 * 1024}
    with _bundled_server(tmp_path_factory.mktemp("contract-server"), runner) as server:
        yield ContractServer(server.url, server)


@pytest.fixture
def bundled(contract_server: ContractServer) -> ContractServer:
    """Skip the test unless it runs against the bundled server (it looks at local processes, relies on
    the server's configuration, or checks behaviour the contract leaves open)."""
    if not contract_server.bundled:
        pytest.skip(
            "needs the bundled server: checks local processes, relies on its configuration,"
            " or checks behaviour the contract leaves open"
        )
    return contract_server


@pytest.fixture(scope="session")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptRunnerServerProcess]:
    """A bundled server with :data:`LIMITED_RUNNER` settings (queueing, truncation, previews)."""
    if os.environ.get("SCRIPTRUNNER_URL"):
        pytest.skip(f"needs a server configured with runner settings {LIMITED_RUNNER}")
    with _bundled_server(tmp_path_factory.mktemp("limited-server"), LIMITED_RUNNER) as server:
        yield server


@pytest.fixture
def make_api() -> Iterator[Callable[..., Api]]:
    """A factory of :class:`Api` clients, each cleaned up after the test."""
    clients: list[Api] = []

    def make(url: str, bundled: bool = True) -> Api:
        client = Api(url, bundled)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def api(contract_server: ContractServer, make_api: Callable[..., Api]) -> Api:
    """Client for :func:`contract_server`."""
    return make_api(contract_server.url, contract_server.bundled)


@pytest.fixture
def limited_api(limited_server: ScriptRunnerServerProcess, make_api: Callable[..., Api]) -> Api:
    """Client for :func:`limited_server`."""
    return make_api(limited_server.url)
