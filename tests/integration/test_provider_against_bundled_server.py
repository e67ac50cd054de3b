"""The hook, operators, sensor and trigger against the bundled server over real HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_scriptrunner._compat import AirflowSensorTimeout, TaskDeferred
from airflow_provider_scriptrunner.client.errors import (
    ScriptRunnerApiError,
    ScriptRunnerJobError,
    ScriptRunnerJobNotFoundError,
)
from airflow_provider_scriptrunner.client.models import JobStatus
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerAsyncHook, ScriptRunnerHook
from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator
from airflow_provider_scriptrunner.sensors.scriptrunner import ScriptRunnerJobSensor
from airflow_provider_scriptrunner.testing import process_alive
from tests.integration.conftest import mixed_text
from tests.operators.test_scriptrunner_operators import RECORD, FakeVariables, make_context


def wait_for(predicate, timeout=15.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def finish_job(hook, job_id, timeout=30.0):
    return wait_for(lambda: (job := hook.get_job(job_id)).is_terminal and job, timeout)


def run_deferred(op, context):
    """Drive a deferrable operator the way Airflow does: execute, run the trigger, execute_complete."""
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        trigger, method_name = deferred.trigger, deferred.method_name

    async def first_event():
        async for event in trigger.run():
            return event.payload
        return None

    payload = asyncio.run(first_event())
    return getattr(op, method_name)(context, payload)


# -- the hook ---------------------------------------------------------------------------------


def test_hook_reads_3_mb_of_multibyte_output_byte_for_byte(scriptrunner_connection):
    hook = ScriptRunnerHook()
    job = hook.run_script("mixed", ["3000000", "11"])
    assert job.status is JobStatus.SUCCEEDED
    expected = mixed_text(3_000_000, 11)[:1048576]  # the server keeps maxLogBytesPerStream (1 MiB)
    chunks = list(hook.iter_log(job.job_id, page_size=65536))
    text = "".join(c.text for c in chunks)
    # Exact up to the cut; a character the server's 1 MiB limit split comes back as U+FFFD, as the server has it.
    exact = text.removesuffix("\ufffd").encode()
    assert exact == expected[: len(exact)] and len(exact) >= 1048576 - 3
    assert chunks[-1].truncated is True and job.stdout_truncated
    assert chunks[-1].next_offset == 1048576


def test_hook_exact_below_truncation_and_async_twin(scriptrunner_connection):
    hook = ScriptRunnerHook()
    job = hook.run_script("mixed", ["900000", "5"])
    expected = mixed_text(900_000, 5)
    assert "".join(c.text for c in hook.iter_log(job.job_id, page_size=4099)).encode() == expected

    async def read_async():
        async with ScriptRunnerAsyncHook() as ahook:
            return "".join([c.text async for c in ahook.iter_log(job.job_id, page_size=7001)])

    assert asyncio.run(read_async()).encode() == expected


def test_hook_surfaces_real_server_errors(scriptrunner_connection):
    hook = ScriptRunnerHook()
    with pytest.raises(ScriptRunnerApiError) as info:
        hook.submit_script("no-such-script")
    assert info.value.error_code == "SCRIPT_NOT_FOUND"
    with pytest.raises(ScriptRunnerJobNotFoundError) as not_found:
        hook.get_job("job_0_0")
    assert (not_found.value.status_code, not_found.value.error_code) == (404, "JOB_NOT_FOUND")
    assert hook.test_connection()[0] is True


# -- the run operator ---------------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True])
def test_run_operator_returns_multibyte_output_over_several_pages_exactly(
    scriptrunner_connection, deferrable, task_log
):
    op = ScriptRunnerRunScriptOperator(
        task_id="t", script_id="mixed", args=["200000", "3"], deferrable=deferrable, poll_interval=0.2,
        max_output_bytes=300_000, log_page_bytes=4096,
    )  # fmt: skip
    result = run_deferred(op, make_context())
    expected = mixed_text(200_000, 3).decode()
    assert result["stdout"] == expected and result["stdout_truncated"] is False
    assert expected.splitlines()[0] in task_log.text and expected.splitlines()[-1] in task_log.text


@pytest.mark.parametrize("deferrable", [False, True])
def test_run_operator_failure_and_server_timeout(scriptrunner_connection, deferrable):
    with pytest.raises(ScriptRunnerJobError, match=r"exit code 7\. End of stderr:\nabout to fail"):
        run_deferred(
            ScriptRunnerRunScriptOperator(
                task_id="t", script_id="fail", args=[7], deferrable=deferrable, poll_interval=0.2
            ),
            make_context(),
        )
    with pytest.raises(ScriptRunnerJobError, match="server's script timeout"):
        run_deferred(
            ScriptRunnerRunScriptOperator(
                task_id="t", script_id="slow-timeout", deferrable=deferrable, poll_interval=0.2
            ),
            make_context(),
        )


@pytest.mark.parametrize("deferrable", [False, True])
def test_task_timeout_cancels_the_real_job(scriptrunner_connection, tmp_path, deferrable):
    marker = tmp_path / "timeout"
    op = ScriptRunnerRunScriptOperator(
        task_id="t",
        script_id="long",
        args=[str(marker)],
        deferrable=deferrable,
        poll_interval=0.2,
        timeout=1.5,
    )
    with pytest.raises(ScriptRunnerJobError, match=r"did not finish within timeout=1.5 s; it was canceled"):
        run_deferred(op, make_context())
    pid = int(Path(f"{marker}.pid").read_text())
    job = finish_job(ScriptRunnerHook(), op.job_id)
    assert job.status is JobStatus.CANCELED
    wait_for(lambda: not process_alive(pid))


def test_on_kill_during_a_real_run_cancels_the_job_and_its_process(scriptrunner_connection, tmp_path):
    marker = tmp_path / "kill"
    op = ScriptRunnerRunScriptOperator(
        task_id="t", script_id="long", args=[str(marker)], deferrable=False, poll_interval=0.2
    )
    errors: list[BaseException] = []
    worker = threading.Thread(target=lambda: _capture(errors, op.execute, make_context()))
    worker.start()
    pid = int(wait_for(lambda: Path(f"{marker}.pid").exists() and Path(f"{marker}.pid").read_text().strip()))
    assert process_alive(pid)
    op.on_kill()
    worker.join(30)
    assert not worker.is_alive()
    assert isinstance(errors[0], ScriptRunnerJobError) and "canceled on the server" in str(errors[0])
    assert ScriptRunnerHook().get_job(op.job_id).status is JobStatus.CANCELED
    wait_for(lambda: not process_alive(pid))


def _capture(errors, func, *args):
    try:
        func(*args)
    except BaseException as err:
        errors.append(err)


class Crash(BaseException):
    """Stands in for a worker dying mid-task."""


@pytest.fixture
def variables(monkeypatch):
    return FakeVariables.install(monkeypatch)


def test_reattach_after_a_crash_continues_the_same_job(
    scriptrunner_connection, tmp_path, monkeypatch, variables
):
    marker = tmp_path / "reattach"
    first = ScriptRunnerRunScriptOperator(
        task_id="run", script_id="long", args=[str(marker)], deferrable=False
    )
    monkeypatch.setattr(first, "_wait_in_worker", lambda *a: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        first.execute(make_context(variables, max_tries=1))
    job_id = variables.values[RECORD]
    wait_for(lambda: Path(f"{marker}.pid").exists())

    second = ScriptRunnerRunScriptOperator(
        task_id="run",
        script_id="long",
        args=[str(marker)],
        deferrable=True,
        poll_interval=0.2,
        timeout=60,
        retries=1,
    )
    context = make_context(variables, try_number=2, max_tries=1)
    with pytest.raises(TaskDeferred) as deferred:
        second.execute(context)
    assert deferred.value.trigger.job_id == job_id
    assert context["ti"].xcom["scriptrunner_owner"] == {"try": 2, "job_id": job_id}
    assert Path(f"{marker}.count").read_text().count("run") == 1  # the script was not started again
    ScriptRunnerHook().cancel_job(job_id)
    finish_job(ScriptRunnerHook(), job_id)


def test_a_retry_takes_the_result_of_a_job_that_succeeded_after_its_try_died(
    scriptrunner_connection, tmp_path, monkeypatch, variables
):
    counter = tmp_path / "counter"
    first = ScriptRunnerRunScriptOperator(task_id="run", script_id="counted", args=[str(counter)], retries=1)
    monkeypatch.setattr(first, "_wait_in_worker", lambda *a: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        first.execute(make_context(variables, max_tries=1))
    job_id = variables.values[RECORD]
    finish_job(ScriptRunnerHook(), job_id)

    retry = ScriptRunnerRunScriptOperator(task_id="run", script_id="counted", args=[str(counter)], retries=1)
    result = retry.execute(make_context(variables, try_number=2, max_tries=1))
    assert (result["job_id"], result["stdout"]) == (job_id, "run number 1\n")  # not run a second time
    assert variables.values == {}


def test_a_cleared_task_after_success_runs_the_script_again(scriptrunner_connection, tmp_path, variables):
    counter = tmp_path / "counter"
    # Try 1, then try 2 after a user cleared the task (max_tries raised to 1 + retries: not a retry).
    results = [
        ScriptRunnerRunScriptOperator(
            task_id="run", script_id="counted", args=[str(counter)], deferrable=False
        ).execute(make_context(variables, try_number=try_number, max_tries=max_tries))
        for try_number, max_tries in ((1, 0), (2, 1))
    ]
    assert results[0]["job_id"] != results[1]["job_id"]
    assert [r["stdout"] for r in results] == ["run number 1\n", "run number 2\n"]


# -- the sensor -----------------------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True])
def test_sensor_waits_for_a_real_job_and_never_cancels_it(scriptrunner_connection, tmp_path, deferrable):
    hook = ScriptRunnerHook()
    ok_job = hook.submit_script("echo", ["hi"])
    sensor = ScriptRunnerJobSensor(
        task_id="s", job_id=ok_job, deferrable=deferrable, poke_interval=0.2, timeout=30
    )
    if deferrable:
        result = run_deferred(sensor, make_context())
    else:
        finish_job(hook, ok_job)
        result = sensor.poke(make_context()).xcom_value
    assert result["status"] == "succeeded" and result["job_id"] == ok_job

    marker = tmp_path / "sensor"
    long_job = hook.submit_script("long", [str(marker)])
    watcher = ScriptRunnerJobSensor(
        task_id="s", job_id=long_job, deferrable=True, poke_interval=0.2, timeout=0.5
    )
    with pytest.raises(
        AirflowSensorTimeout, match=r"did not finish within timeout=0.5 s \(the sensor only watches"
    ):
        run_deferred(watcher, make_context())
    assert hook.get_job(long_job).status is JobStatus.RUNNING  # a sensor only watches
    hook.cancel_job(long_job)
    finish_job(hook, long_job)
