"""The run operator's limits and output across the trigger boundary: deadline, idle_timeout, resume, preview tail."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_scriptrunner._compat import TaskDeferred
from airflow_provider_scriptrunner.client.errors import ScriptRunnerJobError
from airflow_provider_scriptrunner.client.models import ScriptRunnerJob
from airflow_provider_scriptrunner.operators import run_script as ops
from airflow_provider_scriptrunner.task import ownership
from airflow_provider_scriptrunner.task.limits import Deadline
from airflow_provider_scriptrunner.task.outcome import EventKind, JobEvent
from airflow_provider_scriptrunner.task.output import TRUNCATION_MARKER
from tests.conftest import BASE_URL, job_body, mixed_text
from tests.operators.test_scriptrunner_operators import (
    JOB,
    RECORD,
    FakeVariables,
    make_context,
    mock_run,
    posts,
    run_op,
)

try:  # where BaseOperator.resume_execution takes them from: Airflow 3.2+, then 3.1
    from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout
except ImportError:
    from airflow.exceptions import TaskDeferralError, TaskDeferralTimeout

NOW = 1_800_000_000.0


@pytest.fixture
def variables(monkeypatch):
    return FakeVariables.install(monkeypatch)


@pytest.fixture
def clock(monkeypatch):
    """Wall clock for the operator module: each sleep advances it; ``clock.now`` is settable."""

    class Clock:
        now = NOW

        def time(self):
            return self.now

        def sleep(self, delay):
            self.now += delay

    fake = Clock()
    monkeypatch.setattr(ops.time, "time", fake.time)
    monkeypatch.setattr(ops.time, "sleep", fake.sleep)
    return fake


def started(seconds_ago: float) -> datetime:
    return datetime.fromtimestamp(NOW - seconds_ago, tz=timezone.utc)


def cancels(requests_mock, job=JOB):
    return posts(requests_mock, f"/jobs/{job}/cancel")


# -- one deadline, from the try's start ----------------------------------------------------------


def test_time_before_the_wait_counts_towards_timeout(conn, requests_mock, clock):
    mock_run(requests_mock, [{"status": "running"}] * 100)
    with pytest.raises(
        ScriptRunnerJobError, match=rf"job {JOB} did not finish within timeout=10 s; it was canceled"
    ):
        run_op(timeout=10, poll_interval=1).execute(make_context(start_date=started(8)))
    assert clock.now == pytest.approx(NOW + 2)  # 10 s from the try's start, not from the submit
    assert len(cancels(requests_mock)) == 1


def test_execution_timeout_cancels_in_the_worker_and_is_named(conn, requests_mock, clock):
    mock_run(requests_mock, [{"status": "running"}] * 100)
    op = run_op(timeout=60, execution_timeout=timedelta(seconds=20), poll_interval=5)
    with pytest.raises(
        ScriptRunnerJobError,
        match=rf"job {JOB} did not finish within execution_timeout=20 s; it was canceled",
    ):
        op.execute(make_context(start_date=started(0)))
    assert clock.now == pytest.approx(NOW + 20)
    assert len(cancels(requests_mock)) == 1
    op.on_kill()  # Airflow's own timeout may still call on_kill: no second cancel
    assert len(cancels(requests_mock)) == 1


def test_timedelta_timeout(conn, requests_mock, clock):
    mock_run(requests_mock, [{"status": "running"}] * 100)
    with pytest.raises(ScriptRunnerJobError, match="within timeout=90 s"):
        run_op(timeout=timedelta(minutes=1.5)).execute(make_context(start_date=started(0)))


def test_a_failed_cancel_keeps_the_record_for_the_next_try(conn, requests_mock, clock, variables):
    mock_run(requests_mock, [{"status": "running"}] * 100)
    requests_mock.post(f"{BASE_URL}/jobs/{JOB}/cancel", status_code=503, text="")
    with pytest.raises(ScriptRunnerJobError, match=r"canceling it failed.*the next try reattaches"):
        run_op(timeout=5).execute(make_context(variables, start_date=started(0)))
    assert variables.values == {RECORD: JOB}  # not forgotten: no second copy on retry


def test_a_canceled_job_is_no_longer_recorded(conn, requests_mock, clock, variables):
    mock_run(requests_mock, [{"status": "running"}] * 100)
    with pytest.raises(ScriptRunnerJobError, match="it was canceled"):
        run_op(timeout=5).execute(make_context(variables, start_date=started(0)))
    assert variables.sets == [(RECORD, JOB)] and variables.values == {}


def test_deferral_carries_the_deadline_and_a_later_airflow_backstop(conn, requests_mock, clock):
    mock_run(requests_mock, [{"status": "running", "stdoutSize": 3}])
    context = make_context(start_date=started(5), try_number=2)
    op = run_op(
        deferrable=True,
        timeout=600,
        execution_timeout=timedelta(seconds=20),
        idle_timeout=30,
        log_page_bytes=512,
    )
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    trigger = info.value.trigger
    assert trigger.deadline == Deadline(at=NOW + 15, limit="execution_timeout", seconds=20.0)
    assert trigger.deadline.describe() == "execution_timeout=20 s"
    assert info.value.timeout == timedelta(seconds=15 + 60)  # DEFER_TIMEOUT_GRACE (60 s) after the deadline
    assert trigger.stream_logs is True and trigger.log_page_bytes == 512
    assert (trigger.idle.idle_timeout, trigger.idle.sizes, trigger.idle.since) == (30.0, (3, 0), NOW)
    # Which try owns which job, for the trigger's verdict should the task be cleared.
    assert context["ti"].xcom["scriptrunner_owner"] == {"try": 2, "job_id": JOB}
    # What the triggerer gets: plain JSON, from which the same limits come back.
    kwargs = json.loads(json.dumps(trigger.serialize()[1]))
    assert kwargs["deadline"] == {"at": NOW + 15, "limit": "execution_timeout", "seconds": 20.0}
    assert kwargs["idle"] == {"idle_timeout": 30.0, "sizes": [3, 0], "since": NOW}


def test_no_deadline_no_airflow_timeout(conn, requests_mock):
    mock_run(requests_mock, [{"status": "running"}])
    with pytest.raises(TaskDeferred) as info:
        run_op(deferrable=True).execute(make_context())
    assert info.value.timeout is None and info.value.trigger.deadline is None
    assert info.value.trigger.serialize()[1]["idle"] is None


# -- idle_timeout in the worker ------------------------------------------------------------------


def test_worker_cancels_a_stalled_job(conn, requests_mock, clock):
    states = [{"status": "queued"}] * 4 + [{"status": "running", "stdoutSize": 2}] * 100
    mock_run(requests_mock, states, stdout=b"a\n")
    with pytest.raises(ScriptRunnerJobError, match=rf"job {JOB} was canceled: no output for 30 s"):
        run_op(idle_timeout=30, poll_interval=10).execute(make_context())
    assert len(cancels(requests_mock)) == 1


def test_worker_does_not_stall_a_job_that_writes(conn, requests_mock, clock):
    states = [{"status": "running", "stdoutSize": n} for n in range(1, 30)] + [{"status": "succeeded"}]
    mock_run(requests_mock, states, stdout=b"x" * 29)
    assert (
        run_op(idle_timeout=15, poll_interval=10, stream_logs=False).execute(make_context())["status"]
        == "succeeded"
    )
    assert not cancels(requests_mock)


# -- stream_logs=False -----------------------------------------------------------------------------


def test_stream_logs_false_writes_the_output_once_at_the_end(conn, requests_mock, task_log):
    mock_run(
        requests_mock,
        [{"status": "running", "stdoutSize": 3}] * 3 + [{"status": "succeeded"}],
        stdout=b"ab\ncd\n",
    )
    result = run_op(stream_logs=False).execute(make_context())
    logs = [r for r in requests_mock.request_history if r.path.endswith("/logs")]
    assert len(logs) == 1 and logs[0].qs["offset"] == ["0"]  # read only after the job ended
    assert result["stdout"] == "ab\ncd\n" and "[stdout] cd" in task_log.text


# -- execute_complete continues from the trigger -----------------------------------------------------


def worker_result(conn, requests_mock, out, err, **op):
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=out, stderr=err)
    return run_op(**op).execute(make_context())


@pytest.mark.parametrize("cap", [0, 10, 100, 65536])
@pytest.mark.parametrize("split", [0.0, 0.3, 1.0])
def test_deferred_result_equals_worker_result(conn, requests_mock, task_log, cap, split):
    out, err = mixed_text(900), "err ü\n".encode() * 20
    expected = worker_result(conn, requests_mock, out, err, max_output_bytes=cap, log_page_bytes=64)
    requests_mock.reset_mock()
    text = out.decode()
    offset = len(text[: int(len(text) * split)].encode())  # what the trigger logged (a character boundary)
    job = ScriptRunnerJob.from_api(job_body(JOB, "succeeded", stdoutSize=len(out), stderrSize=len(err)))
    event = JobEvent(
        EventKind.ENDED, "ok", JOB, job, log_offsets={"stdout": offset, "stderr": len(err)}
    ).to_dict()
    before = len(task_log.text)
    result = run_op(deferrable=True, max_output_bytes=cap, log_page_bytes=64).execute_complete(
        make_context(), json.loads(json.dumps(event))
    )
    assert result == expected
    # Only what the trigger did not log is logged now.
    resumed = task_log.text[before:]
    assert "[stderr]" not in resumed
    if split == 1.0:
        assert "[stdout]" not in resumed


def test_deferred_result_of_a_truncated_stream_ends_with_the_preview(conn, requests_mock):
    fields = {"stderrTruncated": True, "stderrPreview": "...\nFATAL: the real end\n"}
    mock_run(
        requests_mock, [{"status": "failed", "code": 2, **fields}], stderr=b"early\n" * 5, truncated=True
    )
    with pytest.raises(
        ScriptRunnerJobError, match=r"exit code 2\. End of stderr:\n(.|\n)*FATAL: the real end"
    ) as worker:
        run_op().execute(make_context())
    job = ScriptRunnerJob.from_api(job_body(JOB, "failed", code=2, stderrSize=30, **fields))
    event = JobEvent(
        EventKind.ENDED, "m", JOB, job, log_offsets={"stdout": 0, "stderr": 30}, truncation_warned=("stderr",)
    ).to_dict()
    with pytest.raises(ScriptRunnerJobError) as deferred:
        run_op(deferrable=True).execute_complete(make_context(), event)
    assert str(deferred.value) == str(worker.value)
    assert TRUNCATION_MARKER.strip() in str(worker.value)


# -- Airflow ends the deferral itself (trigger timeout / trigger failure) ----------------------------


@pytest.mark.parametrize(("status", "cancelled"), [("running", 1), ("succeeded", 0)])
def test_resume_after_airflow_ended_the_deferral_cancels_a_live_job(
    conn, requests_mock, variables, status, cancelled
):
    requests_mock.get(f"{BASE_URL}/jobs/{JOB}", json=job_body(JOB, status))
    requests_mock.post(f"{BASE_URL}/jobs/{JOB}/cancel", json=job_body(JOB, "running"))
    variables.values[RECORD] = JOB
    context = make_context(variables)
    with pytest.raises(TaskDeferralTimeout):
        run_op(deferrable=True).resume_execution("__fail__", {"error": "Trigger timeout"}, context)
    assert len(cancels(requests_mock)) == cancelled


def test_resume_after_airflow_ended_the_deferral_respects_cancel_on_kill(conn, requests_mock, variables):
    variables.values[RECORD] = JOB
    context = make_context(variables)
    with pytest.raises(TaskDeferralError):
        run_op(deferrable=True, cancel_on_kill=False).resume_execution(
            "__fail__", {"error": "Trigger failure"}, context
        )
    assert requests_mock.call_count == 0


def test_resume_finds_the_job_in_xcom_without_a_record(conn, requests_mock):
    requests_mock.get(f"{BASE_URL}/jobs/{JOB}", json=job_body(JOB, "running"))
    requests_mock.post(f"{BASE_URL}/jobs/{JOB}/cancel", json=job_body(JOB, "running"))
    context = make_context()
    context["ti"].xcom["job_id"] = JOB
    with pytest.raises(TaskDeferralTimeout):
        run_op(deferrable=True).resume_execution("__fail__", {"error": "Trigger timeout"}, context)
    assert len(cancels(requests_mock)) == 1


def test_a_normal_resume_goes_to_execute_complete(conn, requests_mock):
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=b"ok\n")
    job = ScriptRunnerJob.from_api(job_body(JOB, "succeeded", stdoutSize=3))
    event = JobEvent(EventKind.ENDED, "ok", JOB, job).to_dict()
    result = run_op(deferrable=True).resume_execution("execute_complete", {"event": event}, make_context())
    assert result["stdout"] == "ok\n" and not cancels(requests_mock)


# -- the job record: an Airflow Variable ----------------------------------------------------------


def variable_context(try_number=1):
    return make_context(try_number=try_number, dag_id="etl", run_id="manual__2026-12-01", map_index=3)


def test_a_variable_remembers_the_job_for_the_next_try(conn, requests_mock, variables):
    mock_run(requests_mock, [{"status": "running"}])
    with pytest.raises(TaskDeferred):
        run_op(deferrable=True).execute(variable_context())
    assert variables.values == {"scriptrunner_job__etl__manual__2026-12-01__run__3": JOB}
    # The next try reattaches through it: one task, never two live copies.
    requests_mock.get(
        f"{BASE_URL}/jobs/{JOB}", [{"json": job_body(JOB, "running")}, {"json": job_body(JOB, "succeeded")}]
    )
    result = run_op().execute(variable_context(try_number=2))
    assert result["job_id"] == JOB and len(posts(requests_mock)) == 1
    assert variables.values == {}  # removed when the job ended


def test_variable_keys_stay_within_airflow_limits():
    key = ownership.variable_key("d" * 200, "r" * 200, "t" * 200, -1)
    assert len(key) == 250 and key.startswith("scriptrunner_job__")
    assert key != ownership.variable_key("d" * 200, "r" * 200, "t" * 199, -1)


def test_a_broken_store_never_fails_the_run(conn, requests_mock, variables, task_log):
    variables.error = RuntimeError("API server down")
    mock_run(requests_mock, [{"status": "succeeded"}])
    assert run_op().execute(variable_context())["status"] == "succeeded"
    assert "Could not read the previous try's job from the Variable: API server down" in task_log.text
    assert f"Could not record job {JOB} in the Variable: API server down" in task_log.text
    assert "Could not clear the job record in the Variable: API server down" in task_log.text
