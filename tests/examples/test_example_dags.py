"""
The example DAGs: they parse, and each one runs under ``airflow dags test`` against the bundled
script-runner server with the outcome its docstring promises.

One server (with a copy of example_dags/scripts, as ``make demo`` runs it) and one migrated
AIRFLOW_HOME serve the whole module; each DAG then costs one ``airflow dags test``.
"""

from __future__ import annotations

import ast
import inspect
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.version import Version

from airflow_provider_scriptrunner.testing import ScriptRunnerServerProcess
from airflow_provider_scriptrunner.testing.dag_runner import DagTestResult, airflow_env, migrate, run_dag_test
from airflow_provider_scriptrunner.testing.server import resolve_job_store_file

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"

#: The documented final state of every task of every example DAG (mapped tasks as ``task[i]``).
EXPECTED_STATES: dict[str, dict[str, str]] = {
    "example_scriptrunner": {
        "greet": "success",
        "submit_report": "success",
        "wait_report": "success",
        "report_logs": "success",
        "submit_long": "success",
        "cancel_long": "success",
    },
    "example_scriptrunner_async_sensor": {
        "submit_report": "success",
        "wait_for_report": "success",
        "fetch_report": "success",
    },
    "example_scriptrunner_deferrable_timeout": {"build_report": "success"},
    "example_scriptrunner_cancel": {
        "start_long_job": "success",
        "cancel_long_job": "success",
        "logs_of_canceled_job": "success",
    },
    "example_scriptrunner_mapped": {
        "greet_each[0]": "success",
        "greet_each[1]": "success",
        "greet_each[2]": "success",
        "count_greetings": "success",
    },
    "example_scriptrunner_xcom_chain": {"count_orders": "success", "report_orders": "success"},
    "example_scriptrunner_branch_on_exit_code": {
        "check_freshness": "skipped",
        "publish": "skipped",
        "refresh": "success",
        "announce": "success",
    },
    "example_scriptrunner_retries": {"load_flaky_source": "success"},
    "example_scriptrunner_taskflow": {
        "pick_table": "success",
        "table_stats": "success",
        "check_rows": "success",
    },
    "example_scriptrunner_taskflow_mapped": {
        "list_tables": "success",
        "row_count[0]": "success",
        "row_count[1]": "success",
        "row_count[2]": "success",
        "total_rows": "success",
    },
    "example_scriptrunner_asset_producer": {"export_orders": "success"},
    "example_scriptrunner_asset_consumer": {"which_job": "success"},
}


TABLES = ["orders", "customers", "payments"]
ORDERS_STATS = {"table": "orders", "rows": 42, "columns": ["id", "created_at"]}


def _dagbag():
    try:  # Airflow 3.2+
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag
    kwargs = {"dag_folder": str(EXAMPLE_DAGS)}
    if "include_examples" in inspect.signature(DagBag.__init__).parameters:  # gone in 3.2+
        kwargs["include_examples"] = False
    return DagBag(**kwargs)


# -- parsing -------------------------------------------------------------------------------------


def test_example_dags_parse_without_import_errors():
    dagbag = _dagbag()
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(EXPECTED_STATES)
    # One DAG per file, each file named after its DAG.
    assert sorted(Path(dag.fileloc).stem for dag in dagbag.dags.values()) == sorted(EXPECTED_STATES)
    for dag_id, dag in dagbag.dags.items():
        tasks = {task.task_id for task in dag.tasks}
        assert tasks == {label.split("[")[0] for label in EXPECTED_STATES[dag_id]}, dag_id


@pytest.mark.parametrize("path", sorted(EXAMPLE_DAGS.glob("*.py")), ids=lambda p: p.name)
def test_example_dag_documents_what_it_shows_and_its_outcome(path):
    source = path.read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring and docstring.startswith("Example: ")
    assert "Expected outcome" in docstring
    # Only the Airflow 3 Task SDK; no Airflow 2 import paths.
    imports = [line for line in source.splitlines() if line.startswith(("import airflow", "from airflow"))]
    assert all(
        line.startswith(("from airflow.sdk import", "from airflow_provider_scriptrunner")) for line in imports
    ), imports


# -- running -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_server(tmp_path_factory):
    """The bundled server with a copy of example_dags/scripts, as ``make demo`` runs it."""
    root = tmp_path_factory.mktemp("example-scriptrunner")
    shutil.copytree(EXAMPLE_DAGS / "scripts", root / "server", ignore=shutil.ignore_patterns("state"))
    (root / "tmp").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(root / "tmp"))  # flaky.sh keeps its markers there, not in /tmp
        with ScriptRunnerServerProcess(
            root / "server-run", config_path=root / "server" / "config.json"
        ) as server:
            yield server


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory, example_server):
    """One migrated AIRFLOW_HOME (SQLite) for every ``dags test`` of the module."""
    home = tmp_path_factory.mktemp("airflow-home")
    migrate(airflow_env(home, EXAMPLE_DAGS, example_server.url))
    return home


def server_jobs(server: ScriptRunnerServerProcess, script_id: str) -> list[dict]:
    """The server's own record of every job of one script, oldest first."""
    store = json.loads(resolve_job_store_file(server.config_path).read_text(encoding="utf-8"))
    return [job for job in store["jobs"] if job["scriptId"] == script_id]


CHECKS: dict[str, Callable[[DagTestResult, ScriptRunnerServerProcess], None]] = {}


def checks(dag_id: str):
    def register(function):
        CHECKS[dag_id] = function
        return function

    return register


#: `airflow dags test` on Airflow 3.2.2 sends its first request to its in-process execution API before
#: that API's startup (lifespan) has run, and every task fails with "'State' object has no attribute
#: 'svcs_registry'" (3.3 waits for the startup). The e2e reruns cover the provider on real 3.2.2 components.
DAGS_TEST_BROKEN = Version(__import__("airflow").__version__).release[:2] == (3, 2)


@pytest.mark.skipif(
    DAGS_TEST_BROKEN, reason="`airflow dags test` itself fails on Airflow 3.2 (see DAGS_TEST_BROKEN)"
)
@pytest.mark.parametrize("dag_id", list(EXPECTED_STATES))
def test_example_dag_runs_as_documented(dag_id, example_server, airflow_home):
    result = run_dag_test(
        dag_id,
        dags_folder=EXAMPLE_DAGS,
        airflow_home=airflow_home,
        scriptrunner_url=example_server.url,
        timeout=180,
        migrate_first=False,
    )
    tail = result.output[-6000:]
    assert result.states == EXPECTED_STATES[dag_id], tail
    assert result.run_state == "success", tail
    assert result.returncode == 0, tail
    CHECKS[dag_id](result, example_server)


def assert_succeeded_job(result: dict) -> None:
    assert result["status"] == "succeeded"
    assert result["exit_code"] == 0
    assert result["job_id"].startswith("job_")


@checks("example_scriptrunner")
def check_tour(result, server):
    greet = result.xcom("greet")
    assert_succeeded_job(greet)
    assert greet["stdout"].splitlines()[0].startswith("Hello, manual__")  # the templated run id
    assert greet["stdout"].splitlines()[1] == "Hello, Airflow! Grüße, 你好 👋"
    assert greet["stderr"] == "greeted 2 name(s)\n"
    job_id = result.xcom("submit_report")
    assert result.xcom("wait_report")["job_id"] == job_id
    assert result.xcom("wait_report")["status"] == "succeeded"
    logs = result.xcom("report_logs")
    assert logs["job_id"] == job_id
    assert logs["stdout"]["data"] == "".join(f"row {i}: ok\n" for i in range(1, 6))
    assert logs["stderr"]["data"] == "report finished with 5 rows\n"
    assert result.xcom("cancel_long") == "canceled"


@checks("example_scriptrunner_async_sensor")
def check_async_sensor(result, server):
    job_id = result.xcom("submit_report")
    waited = result.xcom("wait_for_report")
    assert (waited["job_id"], waited["status"], waited["exit_code"]) == (job_id, "succeeded", 0)
    logs = result.xcom("fetch_report")
    assert logs["job_id"] == job_id and "stderr" not in logs
    assert logs["stdout"]["data"] == "row 1: ok\nrow 2: ok\nrow 3: ok\nrow 4: ok\n"
    assert logs["stdout"]["next_offset"] == logs["stdout"]["total_size"] == len(logs["stdout"]["data"])


@checks("example_scriptrunner_deferrable_timeout")
def check_deferrable_timeout(result, server):
    build = result.xcom("build_report")
    assert_succeeded_job(build)
    assert build["stdout"] == "row 1: ok\nrow 2: ok\nrow 3: ok\n"
    assert 1000 <= build["duration_ms"] < 120_000
    # The job (~1.5 s) was still running when the operator first looked: a trigger followed it.
    # (`dags test` runs the trigger in-process and logs this line on Airflow 3.1 and 3.3.)
    assert "[DAG TEST] running trigger in line" in result.output


@checks("example_scriptrunner_cancel")
def check_cancel(result, server):
    assert result.xcom("cancel_long_job") == "canceled"
    job_id = result.xcom("start_long_job")
    [job] = [job for job in server_jobs(server, "sleepy") if job["jobId"] == job_id]
    assert (job["status"], job["code"]) == ("canceled", -1)
    stdout = result.xcom("logs_of_canceled_job")["stdout"]["data"]
    assert stdout.startswith("still working (0/600)\n")
    assert "done" not in stdout


@checks("example_scriptrunner_mapped")
def check_mapped(result, server):
    results = [result.xcom("greet_each", map_index=i) for i in range(3)]
    for item in results:
        assert_succeeded_job(item)
    assert [item["stdout"].count("Hello, ") for item in results] == [1, 2, 3]
    assert "Hello, Grace!" in results[1]["stdout"] and "Hello, Edsger!" in results[2]["stdout"]
    assert len({item["job_id"] for item in results}) == 3  # one job per mapped instance
    assert result.xcom("count_greetings") == 6


@checks("example_scriptrunner_xcom_chain")
def check_xcom_chain(result, server):
    assert result.xcom("count_orders")["stdout"] == "42\n"
    report = result.xcom("report_orders")
    assert_succeeded_job(report)
    assert report["stdout"].splitlines() == [f"row {i}: ok" for i in range(1, 43)]
    assert report["stderr"] == "report finished with 42 rows\n"


@checks("example_scriptrunner_branch_on_exit_code")
def check_branch_on_exit_code(result, server):
    [check] = server_jobs(server, "exit-with")
    assert (check["status"], check["code"]) == (
        "failed",
        3,
    )  # exit 3: skipped, not failed, by skip_on_exit_code
    assert result.xcom("check_freshness") is None
    assert result.xcom("publish") is None
    assert_succeeded_job(result.xcom("refresh"))
    assert result.xcom("announce") == "refreshed"
    assert not any(
        "Hello, readers!" in job["stdoutPreview"] for job in server_jobs(server, "greet")
    )  # publish never ran


@checks("example_scriptrunner_retries")
def check_retries(result, server):
    [task] = [task for task in result.tasks if task["task_id"] == "load_flaky_source"]
    assert task["try_number"] == 2
    first, second = server_jobs(server, "flaky")
    assert (first["status"], first["code"]) == ("failed", 1)
    assert (second["status"], second["code"]) == ("succeeded", 0)
    final = result.xcom("load_flaky_source")
    assert final["job_id"] == second["jobId"] != first["jobId"]  # the retry ran a new job
    assert final["stdout"] == "second try: succeeded\n"
    assert result.xcom("load_flaky_source", key="job_id") == second["jobId"]


@checks("example_scriptrunner_taskflow")
def check_taskflow(result, server):
    stats = result.xcom("table_stats")
    assert_succeeded_job(stats)
    assert stats["result"] == ORDERS_STATS  # output_processor=json.loads over the whole stdout
    assert json.loads(stats["stdout"]) == ORDERS_STATS
    assert result.xcom("check_rows") == "orders has 42 rows"
    assert stats["stderr"] == "checking orders\n"  # the script got what the decorated function returned
    assert result.rendered_fields("table_stats")["args"] == ["orders"]


@checks("example_scriptrunner_taskflow_mapped")
def check_taskflow_mapped(result, server):
    counts = [result.xcom("row_count", map_index=i) for i in range(3)]
    for count in counts:
        assert_succeeded_job(count)
        assert count["result"] == 42  # output_processor=int
    assert [count["stderr"] for count in counts] == [f"counting rows of {t}\n" for t in TABLES]
    assert len({count["job_id"] for count in counts}) == 3
    assert result.xcom("total_rows") == 126


@checks("example_scriptrunner_asset_producer")
def check_asset_producer(result, server):
    export = result.xcom("export_orders")
    assert_succeeded_job(export)
    assert export["result"] == ORDERS_STATS
    [extra] = result.asset_event_extras("orders_stats")
    assert extra == {
        "scriptrunner": {
            "job_id": export["job_id"],
            "script_id": "table-stats",
            "exit_code": 0,
            "duration_ms": export["duration_ms"],
        }
    }


@checks("example_scriptrunner_asset_consumer")
def check_asset_consumer(result, server):
    assert result.xcom("which_job") == []  # run by hand: no triggering event (the e2e runs it on one)


README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.skipif(
    DAGS_TEST_BROKEN, reason="`airflow dags test` itself fails on Airflow 3.2 (see DAGS_TEST_BROKEN)"
)
def test_the_readme_first_dag_runs(tmp_path, example_server, airflow_home):
    """README's "A first DAG" is code that runs: the decorator's result reaches the next task."""
    section = README.read_text(encoding="utf-8").split("### 4. A first DAG", 1)[1]
    source = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "hello_scriptrunner.py").write_text(source, encoding="utf-8")
    result = run_dag_test(
        "hello_scriptrunner",
        dags_folder=tmp_path,
        airflow_home=airflow_home,
        scriptrunner_url=example_server.url,
        timeout=180,
        migrate_first=False,
    )
    assert result.states == {"greet": "success", "shout": "success"}, result.output[-6000:]
    greeting = result.xcom("greet")["result"]  # the example server's greet.sh adds a line of its own
    assert greeting.startswith("Hello, Airflow!") and greeting == greeting.strip()
    assert result.xcom("shout") == greeting.upper()
