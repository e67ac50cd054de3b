"""``@task.scriptrunner``: registration, DAG building, what the function returns, mapping, deferral, RTIF."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from airflow.sdk import DAG, task
from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

from airflow_provider_scriptrunner import get_provider_info
from airflow_provider_scriptrunner._compat import AirflowFailException, TaskDeferred
from airflow_provider_scriptrunner.client.models import ScriptRunnerJob
from airflow_provider_scriptrunner.decorators.scriptrunner import scriptrunner_task
from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator
from airflow_provider_scriptrunner.task.outcome import EventKind, JobEvent
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger
from tests.conftest import job_body
from tests.operators import test_scriptrunner_operators as operator_tests
from tests.operators.test_scriptrunner_operators import JOB, make_context, mock_run, posts

no_sleep = operator_tests.no_sleep  # the operator tests' autouse fixture: polls do not sleep


def build(decorated, *args, **kwargs):
    """The task that calling ``decorated`` adds to a DAG."""
    with DAG("etl", schedule=None):
        return decorated(*args, **kwargs).operator


@pytest.fixture
def load():
    @task.scriptrunner(script_id="quick-echo", deferrable=False)
    def load(table, n=1, ds=None):
        return [table, n, ds]

    return load


def context(**ti):
    return {**make_context(**ti), "ds": "2024-01-01", "params": {"script": "orders", "n": 3}}


def submitted(requests_mock):
    (post,) = posts(requests_mock)
    return post.json()


def test_the_provider_registers_the_decorator_and_airflow_resolves_it():
    assert get_provider_info()["task-decorators"] == [
        {
            "name": "scriptrunner",
            "class-name": "airflow_provider_scriptrunner.decorators.scriptrunner.scriptrunner_task",
        }
    ]
    assert task.scriptrunner is scriptrunner_task  # through Airflow's ProvidersManager and the entry point


def test_a_dag_using_it_builds_a_run_script_task(load):
    with DAG("etl", schedule=None) as dag:
        load("orders")
    op = dag.get_task("load")
    assert isinstance(op, ScriptRunnerRunScriptOperator)
    assert op.custom_operator_name == "@task.scriptrunner"
    assert (op.script_id, op.op_args) == ("quick-echo", ("orders",))


def test_args_given_to_the_decorator_are_refused_with_what_to_do():
    @task.scriptrunner(script_id="quick-echo", args=["a"])
    def run():
        return ["a"]

    with pytest.raises(TypeError, match=r"remove args=\.\.\. and return the list from the function"):
        build(run)


def test_execute_calls_the_function_and_submits_exactly_its_args(conn, requests_mock):
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=b"done\n")
    seen = {}

    @task.scriptrunner(script_id="quick-echo", deferrable=False)
    def run(table, n, ti=None, ds=None):
        seen.update(table=table, n=n, ti=ti, ds=ds)
        return (table, n, 2.5, ds)

    ctx = context()
    result = build(run, "orders", n=3).execute(ctx)
    assert seen == {"table": "orders", "n": 3, "ti": ctx["ti"], "ds": "2024-01-01"}
    assert submitted(requests_mock)["args"] == ["orders", "3", "2.5", "2024-01-01"]
    assert (result["job_id"], result["stdout"], result["result"]) == (JOB, "done\n", None)
    json.dumps(result)  # an XCom value


@pytest.mark.parametrize(
    ("returned", "described"),
    [("orders 3", "str 'orders 3'"), ({"t": "orders"}, "dict"), (None, "NoneType None")],
)
def test_a_function_that_returns_no_list_fails_naming_the_task_and_submits_nothing(
    conn, requests_mock, returned, described
):
    @task.scriptrunner(script_id="quick-echo", task_id="nightly")
    def run():
        return returned

    with pytest.raises(AirflowFailException) as failure:  # no retries: the function would return it again
        build(run).execute(context())
    message = str(failure.value)
    assert "'nightly'" in message and f"returned {described}" in message
    assert "must return the script's args as a list or tuple of strings and numbers" in message
    assert requests_mock.call_count == 0


def test_jinja_in_the_returned_args_and_the_script_id_is_rendered(conn, requests_mock):
    mock_run(requests_mock, [{"status": "succeeded"}])

    @task.scriptrunner(script_id="{{ params.script }}", deferrable=False)
    def run():
        return ["{{ ds }}", "n={{ params.n }}", 7]

    op = build(run)
    op.execute(context())
    body = submitted(requests_mock)
    assert (body["scriptId"], body["args"]) == ("orders", ["2024-01-01", "n=3", "7"])
    # Rendered Templates: Airflow overwrites them after the try with the task's fields as they are now.
    assert op.overwrite_rtif_after_execution is True
    rendered = _serialize_rendered_fields(op)
    assert (rendered["args"], rendered["script_id"]) == (["2024-01-01", "n=3", 7], "orders")


@pytest.fixture
def mapped_dag(load):
    with DAG("etl", schedule=None) as dag:
        load.partial(n=5).expand(table=["orders", "items"])
        load.expand_kwargs([{"table": "users", "n": 9}])
    return dag


@pytest.mark.parametrize(
    ("task_id", "map_index", "args"),
    [("load", 1, ["items", "5", "2024-01-01"]), ("load__1", 0, ["users", "9", "2024-01-01"])],
)
def test_expand_and_expand_kwargs_build_mapped_tasks_that_run(
    conn, requests_mock, mapped_dag, task_id, map_index, args
):
    mock_run(requests_mock, [{"status": "succeeded"}])
    mapped = mapped_dag.get_task(task_id)
    assert mapped.is_mapped and mapped.operator_class.custom_operator_name == "@task.scriptrunner"
    # What the task runner does with a mapped task instance: unmap it for its map index, then run it.
    ctx = {**context(map_index=map_index), "dag": mapped_dag, "dag_run": SimpleNamespace(conf={})}
    mapped.render_template_fields(ctx)
    ctx["task"].execute(ctx)
    assert submitted(requests_mock)["args"] == args


def test_deferrable_defers_with_the_args_and_execute_complete_restores_them(conn, requests_mock):
    mock_run(requests_mock, [{"status": "running"}, {"status": "succeeded"}], stdout=b"ok\n")

    @task.scriptrunner(script_id="quick-echo", deferrable=True)
    def run():
        return ["{{ ds }}", 4]

    with pytest.raises(TaskDeferred) as deferred:
        build(run).execute(context())
    assert isinstance(deferred.value.trigger, ScriptRunnerJobTrigger)
    assert submitted(requests_mock)["args"] == ["2024-01-01", "4"]
    assert deferred.value.kwargs == {"args": ["2024-01-01", 4]}
    # The try resumes on a task built anew from the DAG: its args exist only in next_kwargs.
    resumed = build(run)
    event = JobEvent(EventKind.ENDED, "ended", JOB, ScriptRunnerJob.from_api(job_body(JOB, "succeeded")))
    result = resumed.execute_complete(context(), event.to_dict(), **deferred.value.kwargs)
    assert result["stdout"] == "ok\n"
    assert _serialize_rendered_fields(resumed)["args"] == ["2024-01-01", 4]


def test_multiple_outputs_defaults_to_true_and_can_be_turned_off(load):
    @task.scriptrunner(script_id="quick-echo", multiple_outputs=False)
    def single():
        return []

    assert build(load, "orders").multiple_outputs is True
    assert build(single).multiple_outputs is False
