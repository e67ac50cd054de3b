"""
One shared distributed deployment for this package, in production's shape on one machine:

- PostgreSQL (Debian's ``postgresql``): a throwaway cluster, Airflow's metadata database and the
  Celery result backend;
- Redis (Debian's ``redis-server``): the Celery broker;
- Airflow with the CeleryExecutor: api-server, scheduler, dag-processor, two triggerers
  (``triggerer-1``, ``triggerer-2``) and two Celery workers (``celery-worker-1``,
  ``celery-worker-2``), each reporting its instance name as its hostname;
- the bundled script-runner, running the ``work`` script of tests/e2e/observe.py.

Everything listens on 127.0.0.1 only, on free ports, each in a process group of its own. It is
started once for the package and torn down in reverse order even when a test fails or the run is
interrupted (Ctrl-C, SIGTERM); the teardown asserts that no process of any of them is left.

Without the PostgreSQL or Redis binaries (or the Celery provider, or psycopg2) the package is
skipped with the reason, except under CI (``CI=true``), where that is a failure: .ci/run
installs them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_scriptrunner.testing.harness import ScriptRunnerServerProcess, process_alive
from tests.e2e.deployment import AirflowApi, AirflowDeployment, wait_for
from tests.e2e.observe import WORK_SCRIPT, Marks, ScriptRunnerView
from tests.e2e_distributed.services import PostgresCluster, RedisServer, postgres_bin_dir, redis_server_binary
from tests.e2e_distributed.shape import (
    COMPONENTS,
    ON_KILL_TIMEOUT,
    SCRIPTRUNNER_MAX_CONCURRENT,
    TASK_HEARTBEAT_TIMEOUT,
    TRIGGERER_CAPACITY,
    TRIGGERER_HEALTH_CHECK_THRESHOLD,
)

DAGS_FOLDER = Path(__file__).parent / "dags"
FAILURE_LOGS = Path(__file__).resolve().parents[2] / "test-output" / "e2e-distributed-logs"
DAG_IDS = ("dist_deferrable", "dist_worker_retry", "dist_deferrable_timeout", "dist_mapped")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"{reason}; CI must run the distributed suite (.ci/run installs postgresql and redis-server)"
        )
    pytest.skip(reason)


@dataclass
class Distributed:
    postgres: PostgresCluster
    redis: RedisServer
    scriptrunner: ScriptRunnerServerProcess
    marks: Marks
    airflow: AirflowDeployment


def _airflow_settings(postgres: PostgresCluster, redis: RedisServer) -> dict[str, str]:
    return {
        "AIRFLOW__CELERY__BROKER_URL": redis.url,
        "AIRFLOW__CELERY__RESULT_BACKEND": postgres.celery_result_backend,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__CORE__PARALLELISM": "16",
        "AIRFLOW__TRIGGERER__CAPACITY": str(TRIGGERER_CAPACITY),
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_CHECK_THRESHOLD),
        "AIRFLOW__TRIGGERER__ON_KILL_TIMEOUT": str(ON_KILL_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        # Two triggerers and two workers share a machine with everything else: a few database
        # connections each is plenty.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "5",
    }


@pytest.fixture(scope="package")
def distributed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distributed]:
    """Start everything (see the module docstring); stop it in reverse order, then check nothing is left."""
    postgres_bin, redis_binary = postgres_bin_dir(), redis_server_binary()
    if postgres_bin is None:
        _unavailable(
            "no PostgreSQL server binaries in /usr/lib/postgresql/<version>/bin (apt-get install postgresql)"
        )
    if redis_binary is None:
        _unavailable("no redis-server (apt-get install redis-server)")
    for module, package in (
        ("airflow.providers.celery", "apache-airflow-providers-celery"),
        ("psycopg2", "psycopg2-binary"),
    ):
        if importlib.util.find_spec(module) is None:
            _unavailable(f"{package} is not installed (`make venv` installs apache-airflow[celery,postgres])")
    assert postgres_bin is not None and redis_binary is not None

    base = tmp_path_factory.mktemp("e2e-distributed")
    marks = Marks(base / "marks")
    marks.directory.mkdir()
    #: (what, stop, leftovers) of everything started, in start order.
    started: list[tuple[str, Callable[[], None], Callable[[], list[Any]]]] = []

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)  # a CI runner's SIGTERM tears down too
    try:
        postgres = PostgresCluster(postgres_bin)
        started.append(("PostgreSQL", postgres.stop, postgres.leftovers))
        postgres.start()
        redis = RedisServer(base / "redis", redis_binary)
        started.append(("Redis", redis.stop, redis.leftovers))
        redis.start()
        server = ScriptRunnerServerProcess(
            base / "scriptrunner",
            {"work": {"body": WORK_SCRIPT.format(marks=marks.directory), "mode": "async"}},
            runner={"maxConcurrent": SCRIPTRUNNER_MAX_CONCURRENT, "killGraceSec": 2},
        )
        started.append(
            (
                "script-runner",
                server.stop,
                lambda: [p for p in [server.pid, *marks.all_pids()] if p and process_alive(p)],
            )
        )
        server.start()
        deployment = AirflowDeployment(
            home=base / "airflow",
            dags_folder=DAGS_FOLDER,
            scriptrunner_url=server.url,
            executor="CeleryExecutor",
            database_url=postgres.url,
            component_names=COMPONENTS,
            extra_env=_airflow_settings(postgres, redis),
            component_hostnames=True,
        )
        started.append(("Airflow", deployment.stop_all, deployment.leftovers))
        deployment.start()
        wait_for(
            f"the DAGs {DAG_IDS} to be parsed",
            lambda: all(_dag_exists(deployment.api, dag_id) for dag_id in DAG_IDS),
            timeout=180,
            interval=1,
            on_timeout=lambda: deployment.tail("dag-processor"),
        )
        yield Distributed(postgres, redis, server, marks, deployment)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the teardown short
        try:
            left: dict[str, list[str]] = {}
            for what, stop, leftovers in reversed(started):
                try:
                    stop()
                except Exception as err:
                    left.setdefault(what, []).append(f"stop failed: {err!r}")
                left.setdefault(what, []).extend(str(item) for item in leftovers())
            left = {what: items for what, items in left.items() if items}
            assert not left, "left after teardown:\n" + "\n".join(
                f"{what}: {items}" for what, items in left.items()
            )
        finally:
            signal.signal(signal.SIGTERM, previous)


def _dag_exists(api: AirflowApi, dag_id: str) -> bool:
    response = api.session.get(f"{api.base_url}/api/v2/dags/{dag_id}", timeout=10)
    return response.status_code == 200 and not response.json().get("is_paused", True)


@pytest.fixture(scope="package")
def airflow(distributed: Distributed) -> AirflowDeployment:
    return distributed.airflow


@pytest.fixture(scope="package")
def api(airflow: AirflowDeployment) -> AirflowApi:
    return airflow.api


@pytest.fixture(scope="package")
def scriptrunner(distributed: Distributed) -> ScriptRunnerServerProcess:
    return distributed.scriptrunner


@pytest.fixture(scope="package")
def server_view(scriptrunner: ScriptRunnerServerProcess) -> ScriptRunnerView:
    return ScriptRunnerView(scriptrunner)


@pytest.fixture(scope="package")
def marks(distributed: Distributed) -> Marks:
    return distributed.marks


@pytest.fixture(autouse=True)
def components_survive(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test: what it crashed, paused or stopped on purpose runs again (healthy); a component
    that crashed by itself fails the test (at teardown)."""
    yield
    if "distributed" in request.fixturenames:
        crashed = request.getfixturevalue("distributed").airflow.revive()
        assert not crashed, f"crashed during the test (started again): {', '.join(crashed)}"


FINDINGS = pytest.StashKey[list[str]]()


@pytest.fixture
def finding(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``finding(text)``: a line for the run's summary (what happened, as measured)."""
    findings = request.config.stash.setdefault(FINDINGS, [])
    return lambda text: findings.append(f"{request.node.name}: {text}")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if findings := config.stash.get(FINDINGS, []):
        terminalreporter.section("distributed deployment: what happened")
        for line in findings:
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, attach the end of each component's log and keep every log in test-output/."""
    outcome = yield
    report = outcome.get_result()
    distributed = getattr(item, "funcargs", {}).get("distributed")
    if not report.failed or not isinstance(distributed, Distributed):
        return
    deployment = distributed.airflow
    report.sections.append(("Airflow component logs (end)", deployment.tails()))
    keep = FAILURE_LOGS / item.name
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(deployment.home / "logs", keep, dirs_exist_ok=True)
    shutil.copytree(distributed.scriptrunner.directory, keep / "scriptrunner", dirs_exist_ok=True)
    for path in (distributed.postgres.log_path, distributed.redis.log_path):
        if path.exists():
            shutil.copy(path, keep / path.name)
    report.sections.append(("Kept logs", str(keep)))
