"""What a run hands on: output_processor's result and asset event extras (the facet: tests/openlineage)."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_scriptrunner._compat import AirflowSkipException
from airflow_provider_scriptrunner.client.errors import ScriptRunnerJobError, ScriptRunnerOutputError
from tests.operators import test_scriptrunner_operators as operator_tests
from tests.operators.test_scriptrunner_operators import (
    JOB,
    RECORD,
    make_context,
    mock_run,
    posts,
    run_op,
)

#: The operator tests' fixtures: fake Variables (the job record), and polls that do not sleep.
variables = operator_tests.variables
no_sleep = operator_tests.no_sleep

JOB_EXTRA = {"job_id": JOB, "script_id": "quick-echo", "exit_code": 0, "duration_ms": 990}


# -- output_processor -------------------------------------------------------------------------


def test_the_processor_gets_the_whole_stdout_and_its_return_is_the_result(conn, requests_mock):
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=b"orders\nitems\n")
    result = run_op(output_processor=str.splitlines).execute(make_context())
    assert result["result"] == ["orders", "items"]
    assert result["stdout"] == "orders\nitems\n"


def test_json_loads_reads_a_multi_line_json_document(conn, requests_mock):
    document = {"rows": 3, "tables": ["orders", "items"], "ok": True}
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=json.dumps(document, indent=2).encode() + b"\n")
    assert run_op(output_processor=json.loads).execute(make_context())["result"] == document


def test_a_processor_that_is_not_callable_is_refused_when_the_dag_is_parsed():
    with pytest.raises(TypeError, match=r"output_processor must be a callable .* got str: 'json.loads'"):
        run_op(output_processor="json.loads")


def test_a_raising_processor_fails_with_the_job_and_its_error_and_keeps_the_record(
    conn, requests_mock, variables
):
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=b"not json\n")
    with pytest.raises(ScriptRunnerOutputError) as failure:
        run_op(output_processor=json.loads).execute(make_context(variables))
    message = str(failure.value)
    assert f"output_processor failed on the stdout of job {JOB}: JSONDecodeError: Expecting value" in message
    assert "max_output_bytes" not in message  # stdout was whole
    assert failure.value.job.job_id == JOB
    assert variables.values == {RECORD: JOB}  # a retry finds the succeeded job


def test_a_retry_after_the_processor_raised_processes_the_same_job_without_running_it_again(
    conn, requests_mock, variables
):
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=b"3 rows\n")
    seen = []

    def count_rows(stdout):
        seen.append(stdout)
        if len(seen) == 1:
            raise ValueError("the warehouse was not ready")
        return int(stdout.split()[0])

    with pytest.raises(ScriptRunnerOutputError, match="ValueError: the warehouse was not ready"):
        run_op(retries=1, output_processor=count_rows).execute(make_context(variables, max_tries=1))
    # Try 2 of a task with retries=1 (max_tries 1) is a retry: it takes the succeeded job.
    result = run_op(retries=1, output_processor=count_rows).execute(
        make_context(variables, try_number=2, max_tries=1)
    )
    assert len(posts(requests_mock)) == 1
    assert (result["job_id"], result["result"]) == (JOB, 3)
    assert seen == ["3 rows\n", "3 rows\n"]
    assert variables.values == {}


def test_a_processor_failing_on_truncated_stdout_says_to_raise_max_output_bytes(conn, requests_mock):
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=json.dumps({"rows": list(range(50))}).encode())
    with pytest.raises(ScriptRunnerOutputError) as failure:
        run_op(output_processor=json.loads, max_output_bytes=64).execute(make_context())
    assert (
        "stdout was longer than max_output_bytes (64), so the processor got only its end: "
        "raise max_output_bytes to process all of it"
    ) in str(failure.value)


@pytest.mark.parametrize(
    ("final", "error"),
    [
        ({"status": "failed", "code": 4}, ScriptRunnerJobError),
        ({"status": "failed", "code": 3}, AirflowSkipException),
    ],
)
def test_a_failed_or_skipped_job_is_not_processed_and_its_record_is_cleared(
    conn, requests_mock, variables, final, error
):
    mock_run(requests_mock, [final], stdout=b"{}\n")
    seen = []
    with pytest.raises(error):
        run_op(skip_on_exit_code=3, output_processor=seen.append).execute(make_context(variables))
    assert seen == []
    assert variables.sets == [(RECORD, JOB)] and variables.values == {}


# -- asset events -----------------------------------------------------------------------------


def test_each_asset_event_names_the_job_that_produced_it(conn, requests_mock):
    mock_run(requests_mock, [{"status": "succeeded"}])
    orders, items = Asset("s3://lake/orders"), Asset("s3://lake/items")
    events = OutletEventAccessors()
    events[orders].extra["owner"] = "data"  # set by the task before the script ran
    op = run_op(outlets=[orders, AssetAlias("daily-tables"), items])
    op.execute({**make_context(), "outlet_events": events})
    assert events[orders].extra == {"owner": "data", "scriptrunner": JOB_EXTRA}
    assert events[items].extra == {"scriptrunner": JOB_EXTRA}
    assert len(events) == 2  # the alias was left alone


def test_an_outlet_given_as_an_asset_reference_names_the_job_too(conn, requests_mock, monkeypatch):
    orders = Asset(name="orders", uri="s3://lake/orders")
    # What the API server answers when the task runner resolves the reference.
    monkeypatch.setattr(OutletEventAccessors, "_asset_ref_cache", {})
    monkeypatch.setattr(OutletEventAccessors, "_get_asset_from_db", staticmethod(lambda **_: orders))
    mock_run(requests_mock, [{"status": "succeeded"}])
    events = OutletEventAccessors()
    run_op(outlets=[Asset.ref(name="orders")]).execute({**make_context(), "outlet_events": events})
    assert events[orders].extra == {"scriptrunner": JOB_EXTRA}


def test_a_task_without_outlets_does_not_touch_the_outlet_events(conn, requests_mock):
    mock_run(requests_mock, [{"status": "succeeded"}])
    events = OutletEventAccessors()
    run_op().execute({**make_context(), "outlet_events": events})
    assert len(events) == 0
    run_op().execute(make_context())  # nor needs them
