"""The run operator's ``end_in_triggerer``: what it asks of the trigger, and when a worker must end the task."""

from __future__ import annotations

import json
import types

import pytest
from airflow.sdk import DAG, Asset

from airflow_provider_scriptrunner._compat import TaskDeferred
from airflow_provider_scriptrunner.operators import run_script
from airflow_provider_scriptrunner.task.outcome import TriggerEnd
from tests.operators.test_scriptrunner_operators import make_context, mock_run, run_op


@pytest.fixture(autouse=True)
def no_other_listeners(monkeypatch):
    monkeypatch.setattr(run_script, "other_listeners", list)


def deferred_end(requests_mock, **kwargs) -> TriggerEnd | None:
    """The trigger's ``end_task`` when the operator defers, as it crosses to the triggerer (JSON)."""
    mock_run(requests_mock, [{"status": "running"}])
    with pytest.raises(TaskDeferred) as info:
        run_op(deferrable=True, **kwargs).execute(make_context())
    return TriggerEnd.from_dict(json.loads(json.dumps(info.value.trigger.serialize()[1]))["end_task"])


def test_off_by_default(conn, requests_mock):
    assert deferred_end(requests_mock) is None


def test_on_it_hands_the_trigger_what_a_worker_would_judge_and_push(conn, requests_mock):
    end = deferred_end(requests_mock, end_in_triggerer=True, skip_on_exit_code=[4, 3], max_output_bytes=100)
    assert end == TriggerEnd(
        skip_on_exit_code=(3, 4), max_output_bytes=100, push_result=True, multiple_outputs=False, skip=True
    )
    end = deferred_end(
        requests_mock,
        end_in_triggerer=True,
        do_xcom_push=False,
        multiple_outputs=True,
        on_skipped_callback=lambda context: None,
    )
    assert (end.push_result, end.multiple_outputs, end.skip) == (False, True, False)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"output_processor": json.loads}, "output_processor runs in the worker"),
        ({"outlets": [Asset("orders")]}, "only a worker records asset events for outlets"),
        ({"on_success_callback": lambda context: None}, "on_success_callback runs only in a worker"),
    ],
)
def test_a_task_that_needs_worker_code_at_its_end_ends_in_a_worker(
    conn, requests_mock, task_log, kwargs, why
):
    assert deferred_end(requests_mock, end_in_triggerer=True, **kwargs) is None
    assert f"end_in_triggerer: this task ends in a worker after all, because {why}" in task_log.text


def test_another_listener_plugin_keeps_the_end_in_a_worker(conn, requests_mock, monkeypatch, task_log):
    monkeypatch.setattr(run_script, "other_listeners", lambda: ["OpenLineageListener"])
    assert deferred_end(requests_mock, end_in_triggerer=True) is None
    assert "listener plugins (OpenLineageListener) hear only of tasks that end in a worker" in task_log.text


def test_a_mapped_downstream_task_keeps_the_end_in_a_worker():
    with DAG("mapped_downstream", schedule=None):
        run = run_op(deferrable=True, end_in_triggerer=True)
        run_script.ScriptRunnerRunScriptOperator.partial(task_id="each", script_id="x").expand(
            args=run.output
        )
    assert run._needs_worker_to_end() == "a mapped downstream task needs the length a worker records"


def test_the_listener_list_leaves_out_this_providers_own_and_airflows_example(monkeypatch):
    monkeypatch.undo()  # the real other_listeners
    from airflow_provider_scriptrunner import _compat, listener

    class Manager:
        class pm:  # pluggy's attribute name
            @staticmethod
            def get_plugins():
                class OpenLineageListener:
                    pass

                example = types.ModuleType("airflow.example_dags.plugins.event_listener")
                return {listener, example, OpenLineageListener()}

    monkeypatch.setattr(_compat, "_listener_manager", lambda: Manager)
    assert _compat.other_listeners() == ["OpenLineageListener"]
