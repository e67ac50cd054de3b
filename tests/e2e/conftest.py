"""
One shared deployment for the end-to-end tests: the bundled script-runner (harness) and real
Airflow 3 components (scheduler with LocalExecutor, dag-processor, triggerer, api-server) on
SQLite in a temporary AIRFLOW_HOME. Started once for this package (so a whole-suite run does not
keep Airflow busy after the last e2e test); torn down even when a test fails or the run is
interrupted (Ctrl-C, SIGTERM), and the teardown asserts that no process of it is left.

The ``work`` script (the only script the DAGs in ``dags/`` call) records each run for the tests
in a pid file, ``<marks>/<tag>.runs``: one line with its pid per run.
"""

from __future__ import annotations

import secrets
import shutil
import signal
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_scriptrunner.testing.harness import ScriptRunnerServerProcess, process_alive

from tests.e2e.deployment import ADMIN_USER, AirflowApi, AirflowDeployment, wait_for

DAGS_FOLDER = Path(__file__).parent / "dags"
#: Where a failing test's Airflow and script-runner logs are kept (test-output/ is gitignored).
FAILURE_LOGS = Path(__file__).resolve().parents[2] / "test-output" / "e2e-logs"
DAG_IDS = ("e2e_deferrable", "e2e_worker", "e2e_worker_retry")

WORK_SCRIPT = """#!/bin/sh
# usage: work TAG FIRST_SECONDS FIRST_EXIT LATER_SECONDS
tag="$1"; marks="{marks}"
echo $$ >> "$marks/$tag.runs"
n=$(wc -l < "$marks/$tag.runs")
if [ "$n" -eq 1 ]; then secs="${{2:-0}}"; code="${{3:-0}}"; else secs="${{4:-0}}"; code=0; fi
echo "run $n of $tag (pid $$): working $secs s, then exit $code"
i=0
while [ "$i" -lt $((secs * 10)) ]; do sleep 0.1; i=$((i + 1)); done
echo "run $n of $tag done"
exit "$code"
"""


@dataclass
class Marks:
    """What the ``work`` script wrote about its runs."""

    directory: Path

    def new_tag(self, prefix: str) -> str:
        return f"{prefix}-{secrets.token_hex(3)}"

    def runs(self, tag: str) -> list[int]:
        try:
            return [int(line) for line in (self.directory / f"{tag}.runs").read_text().split()]
        except FileNotFoundError:
            return []

    def wait_runs(self, tag: str, count: int, timeout: float = 60) -> list[int]:
        """Pids of the script's runs, once it has started at least ``count`` times."""
        return wait_for(f"run #{count} of the work script for {tag}", lambda: len(self.runs(tag)) >= count and self.runs(tag), timeout)

    def all_pids(self) -> list[int]:
        return [int(word) for path in self.directory.glob("*.runs") for word in path.read_text().split()]


class ScriptRunnerView:
    """The script-runner's side of a test: jobs as the server reports them."""

    def __init__(self, server: ScriptRunnerServerProcess) -> None:
        self.server = server

    def job(self, job_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.server.url}/jobs/{job_id}", timeout=10)
        response.raise_for_status()
        return response.json()

    def wait_job(self, job_id: str, statuses: Collection[str], timeout: float = 30) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def probe() -> dict[str, Any] | None:
            last.update(self.job(job_id))
            return dict(last) if last["status"] in statuses else None

        return wait_for(f"job {job_id} to be {sorted(statuses)}", probe, timeout, on_timeout=lambda: f"last: {last}")


@pytest.fixture(scope="package")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="package")
def marks(e2e_dir: Path) -> Marks:
    directory = e2e_dir / "marks"
    directory.mkdir()
    return Marks(directory)


@pytest.fixture(scope="package")
def scriptrunner(e2e_dir: Path, marks: Marks) -> Iterator[ScriptRunnerServerProcess]:
    """The bundled script-runner; afterwards, no server and no script process may be left."""
    server = ScriptRunnerServerProcess(
        e2e_dir / "scriptrunner",
        {"work": {"body": WORK_SCRIPT.format(marks=marks.directory), "mode": "async"}},
        runner={"maxConcurrent": 4, "killGraceSec": 2},
    )
    try:
        server.start()
        yield server
    finally:
        pid = server.pid
        server.stop()
        alive = [p for p in [pid, *marks.all_pids()] if p and process_alive(p)]
        assert not alive, f"script-runner processes left after stop: {alive}"


@pytest.fixture(scope="package")
def airflow(e2e_dir: Path, scriptrunner: ScriptRunnerServerProcess) -> Iterator[AirflowDeployment]:
    """Real Airflow on SQLite; always torn down, and the teardown checks that nothing is left."""
    deployment = AirflowDeployment(home=e2e_dir / "airflow", dags_folder=DAGS_FOLDER, scriptrunner_url=scriptrunner.url)

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)  # a CI runner's SIGTERM tears down too
    try:
        deployment.start()
        api = AirflowApi(deployment.api_url, ADMIN_USER, deployment.admin_password)
        wait_for(
            f"the DAGs {DAG_IDS} to be parsed",
            lambda: all(_dag_exists(api, dag_id) for dag_id in DAG_IDS),
            timeout=180,
            interval=1,
            on_timeout=lambda: deployment.tail("dag-processor"),
        )
        yield deployment
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the teardown short
        try:
            deployment.stop_all()
            leftovers = deployment.leftovers()
            assert not leftovers, "Airflow processes left after teardown:\n" + "\n".join(leftovers)
        finally:
            signal.signal(signal.SIGTERM, previous)


def _dag_exists(api: AirflowApi, dag_id: str) -> bool:
    response = api.session.get(f"{api.base_url}/api/v2/dags/{dag_id}", timeout=10)
    return response.status_code == 200 and not response.json().get("is_paused", True)


@pytest.fixture(scope="package")
def api(airflow: AirflowDeployment) -> AirflowApi:
    return AirflowApi(airflow.api_url, ADMIN_USER, airflow.admin_password)


@pytest.fixture(scope="package")
def server_view(scriptrunner: ScriptRunnerServerProcess) -> ScriptRunnerView:
    return ScriptRunnerView(scriptrunner)


@pytest.fixture
def job_pids_gone(marks: Marks) -> Callable[..., list[int]]:
    """``job_pids_gone(tag)``: wait until no run of the work script for ``tag`` is alive."""

    def check(tag: str, timeout: float = 15) -> list[int]:
        pids = marks.runs(tag)
        assert pids, f"the work script never ran for {tag}"
        wait_for(f"the script processes {pids} of {tag} to exit", lambda: not any(process_alive(p) for p in pids), timeout)
        return pids

    return check


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, attach the end of each component's log and keep all Airflow logs in test-output/."""
    outcome = yield
    report = outcome.get_result()
    deployment = getattr(item, "funcargs", {}).get("airflow")
    if not report.failed or not isinstance(deployment, AirflowDeployment):
        return
    report.sections.append(("Airflow component logs (end)", deployment.tails()))
    keep = FAILURE_LOGS / item.name
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(deployment.home / "logs", keep, dirs_exist_ok=True)
    server_dir = deployment.home.parent / "scriptrunner"  # see the scriptrunner fixture
    if server_dir.is_dir():
        shutil.copytree(server_dir, keep / "scriptrunner", dirs_exist_ok=True)
    report.sections.append(("Kept logs", str(keep)))
