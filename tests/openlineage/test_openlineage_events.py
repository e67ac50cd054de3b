"""
OpenLineage with the provider installed (the extra ``openlineage``): ``airflow dags test`` of a
``@task.scriptrunner`` DAG emits START and COMPLETE events carrying the ``scriptrunner_job`` run
facet, in the worker and deferred, and a script that exits 4 gives a FAIL event with the failed
job's facet. The events go to OpenLineage's file transport, configured through the environment as
a deployment would set it. DAGs: example_dags/example_scriptrunner_taskflow.py and dags/.

The version legs of ``make test`` do not install the OpenLineage provider and leave this directory
out (FULL_ONLY in the Makefile); where it runs, a missing provider fails the tests, never skips them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_scriptrunner.testing import ScriptRunnerServerProcess
from airflow_provider_scriptrunner.testing.dag_runner import DagTestResult, airflow_env, migrate, run_dag_test

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
OWN_DAGS = Path(__file__).parent / "dags"
NAMESPACE = "scriptrunner-ol-test"
#: The connection's credentials: the facet's job URL (and every event) must never carry them.
LOGIN = "ol-user"
PASSWORD = "ol-s3cret-never-in-lineage"
FACET = "scriptrunner_job"


@pytest.fixture(scope="module", autouse=True)
def openlineage_provider() -> None:
    if importlib.util.find_spec("airflow.providers.openlineage") is None:
        pytest.fail(
            "apache-airflow-providers-openlineage is not installed: install the extra `openlineage` "
            "(`make venv` does); the version legs leave tests/openlineage out instead"
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The bundled server with a copy of example_dags/scripts (as tests/examples runs it)."""
    root = tmp_path_factory.mktemp("ol-scriptrunner")
    shutil.copytree(EXAMPLE_DAGS / "scripts", root / "server", ignore=shutil.ignore_patterns("state"))
    with ScriptRunnerServerProcess(
        root / "server-run", config_path=root / "server" / "config.json"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def dags_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example DAG under test and this directory's DAGs, in one folder (for one AIRFLOW_HOME)."""
    folder = tmp_path_factory.mktemp("ol-dags")
    shutil.copy(EXAMPLE_DAGS / "example_scriptrunner_taskflow.py", folder)
    for path in OWN_DAGS.glob("*.py"):
        shutil.copy(path, folder)
    return folder


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory, server, dags_folder: Path) -> Path:
    home = tmp_path_factory.mktemp("ol-airflow-home")
    migrate(airflow_env(home, dags_folder, server.url))
    return home


def run_with_lineage(
    dag_id: str, events_file: Path, server, dags_folder: Path, airflow_home: Path
) -> tuple[DagTestResult, list[dict[str, Any]]]:
    """``airflow dags test`` with a file transport and a connection with credentials; the events."""
    conn = json.loads(airflow_env(airflow_home, dags_folder, server.url)["AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT"])
    transport = {"type": "file", "log_file_path": str(events_file), "append": True}
    result = run_dag_test(
        dag_id,
        dags_folder=dags_folder,
        airflow_home=airflow_home,
        scriptrunner_url=server.url,
        timeout=300,
        migrate_first=False,
        extra_env={
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": NAMESPACE,
            "AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT": json.dumps({**conn, "login": LOGIN, "password": PASSWORD}),
        },
    )
    assert events_file.exists(), f"no OpenLineage event was written\n{result.output[-6000:]}"
    text = events_file.read_text(encoding="utf-8")
    assert PASSWORD not in text  # no event carries the connection's password, anywhere
    return result, [json.loads(line) for line in text.splitlines() if line.strip()]


def task_events(events: list[dict[str, Any]], dag_id: str, task_id: str) -> dict[str, list[dict[str, Any]]]:
    """``{eventType: [event, ...]}`` of one task's run events, in the order they were written."""
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event.get("job", {}).get("name") == f"{dag_id}.{task_id}":
            found.setdefault(event["eventType"], []).append(event)
    return found


def facet_of(event: dict[str, Any]) -> dict[str, Any]:
    facet = event["run"]["facets"][FACET]
    assert facet["_schemaURL"].endswith("#scriptrunner_job-run-facet"), facet
    return facet


def server_job(server, job_id: str) -> dict[str, Any]:
    response = requests.get(f"{server.url}/jobs/{job_id}", timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.mark.parametrize(
    ("dag_id", "task_id", "script_id", "deferred"),
    [
        ("example_scriptrunner_taskflow", "table_stats", "table-stats", False),
        ("ol_deferred_script", "wait_for_data", "sleepy", True),
    ],
    ids=["worker", "deferred"],
)
def test_a_succeeding_script_task_emits_start_and_complete_with_its_job(
    dag_id, task_id, script_id, deferred, tmp_path, server, dags_folder, airflow_home
):
    result, events = run_with_lineage(dag_id, tmp_path / "ol.jsonl", server, dags_folder, airflow_home)
    tail = result.output[-6000:]
    assert result.states[task_id] == "success" and result.run_state == "success", tail
    # `dags test` runs a trigger in its own process, and says so.
    assert ("[DAG TEST] running trigger in line" in result.output) is deferred, tail
    returned = result.xcom(task_id)

    emitted = task_events(events, dag_id, task_id)
    assert emitted.keys() == {"START", "COMPLETE"}, (sorted(emitted), tail)
    # A deferred task starts twice (the try, then its resumption), both in the same OpenLineage run.
    starts, [complete] = emitted["START"], emitted["COMPLETE"]
    assert len(starts) == (2 if deferred else 1), [facet_of(e) for e in starts]
    assert {e["run"]["runId"] for e in [*starts, complete]} == {complete["run"]["runId"]}
    assert {e["job"]["namespace"] for e in [*starts, complete]} == {NAMESPACE}

    # START: the script is known; no job yet (on resumption the operator has not looked it up yet).
    for start in starts:
        begun = facet_of(start)
        assert begun["scriptId"] == script_id
        assert not begun.keys() & {"jobId", "jobUrl", "status", "exitCode"}, begun

    # COMPLETE: the job that ran, as the server knows it.
    done = facet_of(complete)
    job = server_job(server, returned["job_id"])
    assert (job["status"], job["code"], job["scriptId"]) == ("succeeded", 0, script_id)
    assert done["scriptId"] == script_id
    assert done["jobId"] == returned["job_id"]
    assert done["jobUrl"] == f"{server.url}/jobs/{returned['job_id']}"  # no credential in it
    assert LOGIN not in done["jobUrl"] and "@" not in done["jobUrl"]
    assert (done["status"], done["exitCode"]) == ("succeeded", 0)
    assert done["durationMs"] == returned["duration_ms"]

    # The DAG's other tasks (plain @task) carry no such facet.
    others = [e for e in events if e["job"]["name"].startswith(f"{dag_id}.") and e not in [*starts, complete]]
    assert all(FACET not in e["run"]["facets"] for e in others)


def test_a_failing_script_emits_fail_with_the_failed_job(tmp_path, server, dags_folder, airflow_home):
    dag_id, task_id = "ol_failing_script", "check_quality"
    result, events = run_with_lineage(dag_id, tmp_path / "ol.jsonl", server, dags_folder, airflow_home)
    tail = result.output[-6000:]
    assert result.states == {task_id: "failed"} and result.run_state == "failed", tail
    job_id = result.xcom(task_id, key="job_id")
    job = server_job(server, job_id)
    assert (job["status"], job["code"], job["scriptId"]) == ("failed", 4, "exit-with")

    emitted = task_events(events, dag_id, task_id)
    assert emitted.keys() == {"START", "FAIL"}, (sorted(emitted), tail)
    [start], [fail] = emitted["START"], emitted["FAIL"]
    assert start["run"]["runId"] == fail["run"]["runId"]
    assert facet_of(start)["scriptId"] == "exit-with"
    failed = facet_of(fail)
    assert failed["scriptId"] == "exit-with"
    assert failed["jobId"] == job_id
    assert failed["jobUrl"] == f"{server.url}/jobs/{job_id}"
    assert (failed["status"], failed["exitCode"]) == ("failed", 4)
