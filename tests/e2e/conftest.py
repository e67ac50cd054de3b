"""
One shared deployment for the end-to-end tests: the bundled script-runner (harness) and real
Airflow 3 components (scheduler with LocalExecutor, dag-processor, triggerer, api-server) on
SQLite in a temporary AIRFLOW_HOME. Started once for this package (so a whole-suite run does not
keep Airflow busy after the last e2e test); torn down even when a test fails or the run is
interrupted (Ctrl-C, SIGTERM), and the teardown asserts that no process of it is left.

The ``work`` script (the only script the DAGs in ``dags/`` call) records each run for the tests
in a pid file, ``<marks>/<tag>.runs``: one line with its pid per run (see observe.py).
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_scriptrunner.testing.harness import ScriptRunnerServerProcess, process_alive
from tests.e2e.deployment import ADMIN_USER, AirflowApi, AirflowDeployment, wait_for
from tests.e2e.observe import WORK_SCRIPT, Marks, ScriptRunnerView

DAGS_FOLDER = Path(__file__).parent / "dags"
#: Where a failing test's Airflow and script-runner logs are kept (test-output/ is gitignored).
FAILURE_LOGS = Path(__file__).resolve().parents[2] / "test-output" / "e2e-logs"
DAG_IDS = ("e2e_deferrable", "e2e_worker", "e2e_worker_retry", "e2e_retries")
#: The scenarios of reruns and kills that ``make e2e-on-<version>`` runs on every other supported
#: release (marker ``reruns``), by test module: what differs between releases is how a try ends,
#: is cleared, retried and resumed (and, for ``end_in_triggerer``, how a trigger ends its task).
RERUN_SCENARIOS = {
    "test_airflow_e2e.py": (
        "test_every_component_listens_on_loopback_only",
        "test_marking_a_deferred_task_failed_cancels_its_job",
        "test_restarting_the_triggerer_mid_job_does_not_cancel_it",
    ),
    "test_never_two_copies.py": (
        "test_clearing_a_deferred_task_while_its_job_runs_never_runs_two_copies",
        "test_a_task_process_killed_mid_job_is_retried_without_a_second_live_copy",
    ),
    "test_early_marks.py": (
        "test_a_task_marked_failed_the_moment_it_defers_cancels_only_its_own_job",
        "test_a_task_marked_failed_while_no_triggerer_runs_cancels_its_job",
    ),
    "test_retries.py": (
        "test_an_unknown_script_fails_at_once_without_using_the_retries",
        "test_a_script_that_exits_non_zero_still_uses_the_retries",
        "test_a_retry_takes_the_result_of_a_job_that_succeeded_after_its_task_died",
    ),
    "test_trigger_end_e2e.py": (
        "test_a_job_that_succeeds_ends_its_task_in_the_triggerer_with_the_workers_result",
        "test_a_skipped_job_ends_its_task_in_the_triggerer",
        "test_a_failed_job_falls_back_to_the_worker_and_its_retry",
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the RERUN_SCENARIOS; one renamed or removed fails the run instead of going untested."""
    here = Path(__file__).parent
    collected: dict[str, set[str]] = {}
    for item in items:
        if item.path.parent == here:
            name = item.originalname  # type: ignore[attr-defined]
            collected.setdefault(item.path.name, set()).add(name)
            if name in RERUN_SCENARIOS.get(item.path.name, ()):
                item.add_marker(pytest.mark.reruns)
    missing = [
        f"{module}::{name}"
        for module, names in collected.items()
        for name in RERUN_SCENARIOS.get(module, ())
        if name not in names
    ]
    if missing and "reruns" in (config.getoption("markexpr") or ""):
        raise pytest.UsageError(f"RERUN_SCENARIOS names tests that do not exist: {missing}")


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
    deployment = AirflowDeployment(
        home=e2e_dir / "airflow", dags_folder=DAGS_FOLDER, scriptrunner_url=scriptrunner.url
    )

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, terminate)  # a CI runner's SIGTERM tears down too
    try:
        deployment.start()
        wait_dags_parsed(
            deployment, AirflowApi(deployment.api_url, ADMIN_USER, deployment.admin_password), DAG_IDS
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


def wait_dags_parsed(deployment: AirflowDeployment, api: AirflowApi, dag_ids: Collection[str]) -> None:
    """Wait until the dag-processor has parsed ``dag_ids`` (they are unpaused at creation)."""
    wait_for(
        f"the DAGs {sorted(dag_ids)} to be parsed",
        lambda: all(_dag_exists(api, dag_id) for dag_id in dag_ids),
        timeout=180,
        interval=1,
        on_timeout=lambda: deployment.tail("dag-processor"),
    )


@pytest.fixture(scope="package")
def api(airflow: AirflowDeployment) -> AirflowApi:
    return AirflowApi(airflow.api_url, ADMIN_USER, airflow.admin_password)


@pytest.fixture(scope="package")
def dags_parsed(airflow: AirflowDeployment, api: AirflowApi) -> Callable[[Collection[str]], None]:
    """``dags_parsed(dag_ids)``: wait until a test module's own DAGs (not in DAG_IDS) are parsed."""
    return lambda dag_ids: wait_dags_parsed(airflow, api, dag_ids)


@pytest.fixture(autouse=True)
def components_survive(request: pytest.FixtureRequest) -> Iterator[None]:
    """A component that crashed during a test fails that test (at teardown), and is started again so
    that the tests after it find the whole deployment; one that a test stopped is started again too."""
    yield
    if "airflow" in request.fixturenames:
        crashed = request.getfixturevalue("airflow").revive()
        assert not crashed, f"crashed during the test (started again): {', '.join(crashed)}"


@pytest.fixture(scope="package")
def server_view(scriptrunner: ScriptRunnerServerProcess) -> ScriptRunnerView:
    return ScriptRunnerView(scriptrunner)


@pytest.fixture
def job_pids_gone(marks: Marks) -> Callable[..., list[int]]:
    """``job_pids_gone(tag)``: wait until no run of the work script for ``tag`` is alive."""

    def check(tag: str, timeout: float = 15) -> list[int]:
        pids = marks.runs(tag)
        assert pids, f"the work script never ran for {tag}"
        wait_for(
            f"the script processes {pids} of {tag} to exit",
            lambda: not any(process_alive(p) for p in pids),
            timeout,
        )
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
