"""Operators with requests-mock: every outcome, deferral, reattach, cancel-on-kill, logs."""

from __future__ import annotations

import json
import time

import pytest

from airflow_provider_scriptrunner import _compat
from airflow_provider_scriptrunner._compat import AirflowFailException, AirflowSkipException, TaskDeferred
from airflow_provider_scriptrunner.client.errors import (
    ScriptRunnerApiError,
    ScriptRunnerAuthError,
    ScriptRunnerJobError,
    ScriptRunnerJobNotFoundError,
    ScriptRunnerResponseError,
)
from airflow_provider_scriptrunner.client.models import ScriptRunnerJob
from airflow_provider_scriptrunner.operators import run_script as ops
from airflow_provider_scriptrunner.operators.scriptrunner import (
    ScriptRunnerCancelJobOperator,
    ScriptRunnerGetJobLogsOperator,
    ScriptRunnerJobLink,
    ScriptRunnerRunScriptOperator,
    ScriptRunnerSubmitScriptOperator,
)
from airflow_provider_scriptrunner.task.outcome import EventKind, JobEvent
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger
from tests.conftest import BASE_URL, job_body, log_page_callback

JOB = "job_100_1"
JOB_URL = f"{BASE_URL}/jobs/{JOB}"


#: The task instance whose job record the reruns follow: its ids, and the key of its Variable.
TASK_IDS = {"dag_id": "etl", "run_id": "manual__2026-01-01", "task_id": "run", "map_index": -1}
RECORD = "scriptrunner_job__etl__manual__2026-01-01__run__-1"


class FakeTI:
    def __init__(
        self,
        try_number=1,
        start_date=None,
        max_tries=None,
        dag_id=None,
        run_id=None,
        task_id="run",
        map_index=-1,
    ):
        self.xcom: dict[str, object] = {}
        self.try_number = try_number
        self.max_tries = max_tries
        self.start_date = start_date
        self.dag_id, self.run_id, self.task_id, self.map_index = dag_id, run_id, task_id, map_index

    def xcom_push(self, key, value):
        json.dumps(value)  # XCom values must be JSON
        self.xcom[key] = value

    def xcom_pull(self, task_ids=None, key="return_value", **_):
        return self.xcom.get(key)


class FakeVariables:
    """
    airflow.sdk.Variable in memory, where the job record of a task's tries lives. ``error``, when
    set, is raised by every call (an API server that is down).
    """

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.descriptions: dict[str, str | None] = {}
        self.sets: list[tuple[str, str]] = []
        self.error: Exception | None = None

    @classmethod
    def install(cls, monkeypatch) -> FakeVariables:
        from airflow.sdk import Variable

        fake = cls()
        for name in ("get", "set", "delete"):
            monkeypatch.setattr(Variable, name, staticmethod(getattr(fake, name)))
        return fake

    def get(self, key, default=None):
        self._fail()
        return self.values.get(key, default)

    def set(self, key, value, description=None):
        self._fail()
        self.sets.append((key, value))
        self.values[key] = value
        self.descriptions[key] = description

    def delete(self, key):
        self._fail()
        self.values.pop(key, None)

    def _fail(self) -> None:
        if self.error is not None:
            raise self.error


@pytest.fixture
def variables(monkeypatch):
    return FakeVariables.install(monkeypatch)


def make_context(variables=None, **ti):
    """
    A try's context. Given ``variables`` (the fake Variables), its task instance has the ids of
    :data:`TASK_IDS` (the record is :data:`RECORD`); without, it has no ids and keeps no record.
    """
    if variables is not None:
        ti = {"dag_id": TASK_IDS["dag_id"], "run_id": TASK_IDS["run_id"], **ti}
    return {"ti": FakeTI(**ti)}


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    """Record worker-mode poll delays instead of sleeping."""
    delays: list[float] = []
    monkeypatch.setattr(ops.time, "sleep", delays.append)
    return delays


def mock_run(requests_mock, states, stdout=b"", stderr=b"", job_id=JOB, truncated=False):
    """Submit answers ``job_id``; successive GET /jobs answers walk through ``states`` (dicts)."""
    requests_mock.post(
        f"{BASE_URL}/run", status_code=202, json={"ok": True, "jobId": job_id, "status": "queued"}
    )
    terminal = ("succeeded", "failed", "timed_out", "canceled")
    # A finished job reports the sizes of what it stored, as the server does.
    sized = [
        {"stdoutSize": len(stdout), "stderrSize": len(stderr), **s} if s.get("status") in terminal else s
        for s in states
    ]
    requests_mock.get(f"{BASE_URL}/jobs/{job_id}", [{"json": job_body(job_id, **s)} for s in sized])
    requests_mock.get(
        f"{BASE_URL}/jobs/{job_id}/logs",
        json=log_page_callback({"stdout": stdout, "stderr": stderr}, truncated),
    )
    requests_mock.post(f"{BASE_URL}/jobs/{job_id}/cancel", json=job_body(job_id, "running"))


def run_op(**kwargs):
    kwargs.setdefault("task_id", "run")
    kwargs.setdefault("script_id", "quick-echo")
    kwargs.setdefault("deferrable", False)
    return ScriptRunnerRunScriptOperator(**kwargs)


def posts(requests_mock, path="/run"):
    return [r for r in requests_mock.request_history if r.method == "POST" and r.path == path]


# -- construction -----------------------------------------------------------------------------


def test_no_hook_or_connection_at_parse_time(requests_mock):
    op = run_op(scriptrunner_conn_id="does_not_exist")
    assert "hook" not in op.__dict__
    assert requests_mock.call_count == 0


JINJA_CONTEXT = {"ds": "2024-01-01", "params": {"script": "orders", "n": 3, "env": "prod"}}


@pytest.mark.parametrize("operator", [ScriptRunnerRunScriptOperator, ScriptRunnerSubmitScriptOperator])
def test_script_args_and_connection_are_rendered_by_airflow(operator):
    op = operator(
        task_id="t",
        script_id="{{ params.script }}",
        args=["{{ ds }}", "n={{ params.n }}", 4],
        scriptrunner_conn_id="sr_{{ params.env }}",
    )
    op.render_template_fields(dict(JINJA_CONTEXT))
    assert (op.script_id, op.args, op.scriptrunner_conn_id) == ("orders", ["2024-01-01", "n=3", 4], "sr_prod")
    assert op.hook.scriptrunner_conn_id == "sr_prod"  # the hook is built after rendering, on the real id


def test_job_operators_render_the_job_id_from_xcom():
    context = make_context()
    context["ti"].xcom["return_value"] = JOB
    context.update(JINJA_CONTEXT)
    cancel = ScriptRunnerCancelJobOperator(
        task_id="cancel", job_id="{{ ti.xcom_pull('submit') }}", scriptrunner_conn_id="sr_{{ params.env }}"
    )
    logs = ScriptRunnerGetJobLogsOperator(
        task_id="logs", job_id="{{ ti.xcom_pull('submit') }}", stream="{{ 'std' ~ 'err' }}"
    )
    cancel.render_template_fields(context)
    logs.render_template_fields(context)
    assert (cancel.job_id, cancel.scriptrunner_conn_id) == (JOB, "sr_prod")
    assert (logs.job_id, logs.stream) == (JOB, "stderr")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"poll_interval": 0}, "poll_interval must be a positive"),
        ({"timeout": -1}, "timeout must be a positive"),
        ({"max_output_bytes": -1}, "max_output_bytes must be a number of bytes >= 0, got -1"),
        ({"skip_on_exit_code": "3"}, "skip_on_exit_code must contain only ints"),
        ({"skip_on_exit_code": True}, "not a bool"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        run_op(**kwargs)


@pytest.mark.parametrize(("setting", "expected"), [("True", True), ("False", False), (None, False)])
def test_default_deferrable_comes_from_config(monkeypatch, setting, expected):
    if setting is None:
        monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", setting)
    assert run_op(deferrable=None).deferrable is expected
    # An explicit argument wins over the setting.
    assert run_op(deferrable=not expected).deferrable is (not expected)


# -- worker mode: outcomes --------------------------------------------------------------------


def test_success_returns_result_and_pushes_job_id(conn, requests_mock, task_log):
    mock_run(
        requests_mock,
        [{"status": "running", "stdoutSize": 6}, {"status": "succeeded", "stdoutSize": 12, "stderrSize": 5}],
        stdout="héllo\nworld\n".encode(),
        stderr=b"warn\n",
    )
    context = make_context()
    result = run_op(args=["a", 1]).execute(context)
    assert posts(requests_mock)[0].json() == {"scriptId": "quick-echo", "args": ["a", "1"], "mode": "async"}
    assert context["ti"].xcom["job_id"] == JOB
    assert context["ti"].xcom["job_url"] == JOB_URL
    assert result == {
        "job_id": JOB, "script_id": "quick-echo", "status": "succeeded", "exit_code": 0,
        "stdout": "héllo\nworld\n", "stderr": "warn\n", "stdout_truncated": False, "stderr_truncated": False,
        "duration_ms": 990, "started_at": "2026-01-01T00:00:00.010Z", "ended_at": "2026-01-01T00:00:01.000Z",
        "result": None,  # no output_processor
    }  # fmt: skip
    json.dumps(result)
    assert (
        "[stdout] héllo" in task_log.text
        and "[stdout] world" in task_log.text
        and "[stderr] warn" in task_log.text
    )


def test_non_zero_exit_fails_with_code_and_stderr_tail(conn, requests_mock):
    mock_run(requests_mock, [{"status": "failed", "code": 3}], stderr=b"line1\nboom: disk full\n")
    with pytest.raises(
        ScriptRunnerJobError, match=r"failed with exit code 3\. End of stderr:\nline1\nboom: disk full"
    ) as info:
        run_op().execute(make_context())
    assert info.value.job.exit_code == 3


@pytest.mark.parametrize("skip", [3, [1, 3], (3,)])
def test_skip_on_exit_code(conn, requests_mock, skip):
    mock_run(requests_mock, [{"status": "failed", "code": 3}])
    with pytest.raises(AirflowSkipException, match="exited with code 3, which is in skip_on_exit_code"):
        run_op(skip_on_exit_code=skip).execute(make_context())


def test_exit_code_not_in_skip_list_still_fails(conn, requests_mock):
    mock_run(requests_mock, [{"status": "failed", "code": 2}])
    with pytest.raises(ScriptRunnerJobError, match="exit code 2"):
        run_op(skip_on_exit_code=3).execute(make_context())


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"status": "timed_out", "code": -1}, "the server's script timeout"),
        ({"status": "canceled", "code": -1}, "was canceled on the server"),
        (
            {"status": "failed", "code": -1},
            "killed by a signal, or lost when the script-runner server restarted",
        ),
    ],
)
def test_abnormal_endings_fail_with_their_reason(conn, requests_mock, state, match):
    mock_run(requests_mock, [state])
    with pytest.raises(ScriptRunnerJobError, match=match):
        run_op(skip_on_exit_code=-1).execute(make_context())


def test_polling_starts_fast_and_grows_to_poll_interval(conn, requests_mock, no_sleep):
    mock_run(requests_mock, [{"status": "queued"}] * 20 + [{"status": "succeeded"}])
    run_op(poll_interval=1.5).execute(make_context())
    assert no_sleep[0] <= 0.01
    assert no_sleep == sorted(no_sleep)
    assert max(no_sleep) == 1.5


def test_a_minute_long_job_stays_within_the_request_budget(conn, requests_mock, no_sleep):
    # The job ends once the operator has waited 60 s in all; every request is counted.
    mock_run(requests_mock, [{"status": "running"}])
    requests_mock.get(
        JOB_URL,
        json=lambda request, context: job_body(JOB, "succeeded" if sum(no_sleep) >= 60 else "running"),
    )
    run_op().execute(make_context())
    assert sum(no_sleep) >= 60
    assert len(requests_mock.request_history) <= 30  # submit, polls, no log read: output is empty


def test_logs_are_only_fetched_when_the_job_reports_new_output(conn, requests_mock):
    mock_run(requests_mock, [{"status": "running"}] * 5 + [{"status": "succeeded"}])
    run_op().execute(make_context())
    log_calls = [r for r in requests_mock.request_history if r.path.endswith("/logs")]
    assert log_calls == []  # the job never reported output: nothing to read


def test_final_log_read_only_for_streams_with_unread_output(conn, requests_mock):
    mock_run(
        requests_mock,
        [{"status": "running", "stdoutSize": 3}, {"status": "succeeded", "stdoutSize": 6}],
        stdout=b"ab\ncd\n",
    )
    result = run_op().execute(make_context())
    streams = [r.qs["stream"][0] for r in requests_mock.request_history if r.path.endswith("/logs")]
    # Read once while running (all 6 bytes were there by then), not again at the end; stderr stayed empty.
    assert streams == ["stdout"]
    assert result["stdout"] == "ab\ncd\n"


def test_a_finished_job_whose_preview_is_all_of_it_needs_no_log_read(conn, requests_mock, task_log):
    stdout, stderr = "héllo\nworld\n".encode(), b"warn\n"
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=stdout, stderr=stderr)
    from_logs = run_op().execute(make_context())
    assert [r for r in requests_mock.request_history if r.path.endswith("/logs")]  # no previews: read

    requests_mock.reset_mock()
    previews = {"stdoutPreview": stdout.decode(), "stderrPreview": stderr.decode()}
    mock_run(
        requests_mock,
        [{"status": "running"}, {"status": "succeeded", **previews}],
        stdout=stdout,
        stderr=stderr,
    )
    from_previews = run_op().execute(make_context())

    assert from_previews == from_logs
    assert [r for r in requests_mock.request_history if r.path.endswith("/logs")] == []
    assert task_log.text.count("[stdout] héllo") == 2 and task_log.text.count("[stderr] warn") == 2


def test_output_is_capped_in_the_return_value_but_fully_logged(conn, requests_mock, task_log):
    out = "".join(f"line {i} ü\n" for i in range(2000)).encode()
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=out)
    result = run_op(max_output_bytes=100, log_page_bytes=1000).execute(make_context())
    assert result["stdout_truncated"] is True
    assert len(result["stdout"].encode()) <= 100
    assert out.decode().endswith(result["stdout"])
    assert "[stdout] line 0 ü" in task_log.text and "[stdout] line 1999 ü" in task_log.text


def test_server_truncation_is_reported(conn, requests_mock, task_log):
    mock_run(
        requests_mock, [{"status": "succeeded", "stdoutTruncated": True}], stdout=b"x" * 10, truncated=True
    )
    result = run_op().execute(make_context())
    assert result["stdout_truncated"] is True
    assert "The server truncated stdout" in task_log.text


NOT_RETRIED = " (not retried: another try would fail the same way)"


def test_bad_templated_args_fail_before_any_request_without_retries(conn, requests_mock):
    with pytest.raises(AirflowFailException) as info:
        run_op(args=[None]).execute(make_context())
    assert str(info.value) == "args[0] must be a string (or a number), got NoneType: None" + NOT_RETRIED
    assert type(info.value.__cause__) is TypeError
    with pytest.raises(AirflowFailException) as info:
        run_op(script_id="").execute(make_context())
    assert str(info.value).startswith("script_id is empty: give the id of a script")
    assert type(info.value.__cause__) is ValueError
    assert requests_mock.call_count == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            "orders 2024-01-01",
            (
                "args must be a list or tuple of strings, got str: give each argument as its own item, "
                "e.g. args=['orders', '2024-01-01']"
            ),
        ),
        (
            "orders",
            (
                "args must be a list or tuple of strings, got str: wrap a single argument in a list, "
                "e.g. args=['orders']"
            ),
        ),
    ],
)
@pytest.mark.parametrize("operator", [ScriptRunnerRunScriptOperator, ScriptRunnerSubmitScriptOperator])
def test_args_given_as_a_string_fail_with_a_hint(conn, requests_mock, operator, args, message):
    op = operator(task_id="t", script_id="quick-echo", args=args)
    with pytest.raises(AirflowFailException) as info:
        op.execute(make_context())
    assert str(info.value) == message + NOT_RETRIED
    assert type(info.value.__cause__) is TypeError
    assert requests_mock.call_count == 0


@pytest.mark.parametrize(
    ("code", "message"),
    [("SCRIPT_NOT_FOUND", "script not found: nope"), ("INVALID_ARGS", "args[0] too long")],
)
@pytest.mark.parametrize("operator", [ScriptRunnerRunScriptOperator, ScriptRunnerSubmitScriptOperator])
def test_what_the_server_rejects_for_good_fails_without_retries(conn, requests_mock, operator, code, message):
    requests_mock.post(
        f"{BASE_URL}/run", status_code=400, json={"ok": False, "error": {"code": code, "message": message}}
    )
    with pytest.raises(AirflowFailException) as info:
        operator(task_id="t", script_id="nope").execute(make_context())
    assert (
        str(info.value)
        == f"script-runner answered 400 {code} to POST {BASE_URL}/run: {message}" + NOT_RETRIED
    )
    assert info.value.__cause__.error_code == code
    assert len(posts(requests_mock, "/run")) == 1


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (503, {"ok": False, "error": {"code": "INTERNAL_ERROR", "message": "busy"}}, ScriptRunnerApiError),
        (401, {"ok": False, "error": {"code": "UNAUTHORIZED", "message": "no token"}}, ScriptRunnerAuthError),
        (429, "Too Many Requests", ScriptRunnerResponseError),
    ],
)
def test_failures_a_later_try_may_not_meet_keep_the_retries(conn, requests_mock, status, body, error):
    # A busy or failing server, and credentials (fixable in the connection before the next try).
    kwargs = {"json": body} if isinstance(body, dict) else {"text": body}
    requests_mock.post(f"{BASE_URL}/run", status_code=status, **kwargs)
    with pytest.raises(error) as info:
        run_op().execute(make_context())
    assert not isinstance(info.value, AirflowFailException)
    assert info.value.status_code == status


# -- timeout ----------------------------------------------------------------------------------


def test_worker_timeout_cancels_the_job_and_fails(conn, requests_mock, monkeypatch):
    clock = iter(range(0, 1000, 5))
    monkeypatch.setattr(ops.time, "time", lambda: float(next(clock)))
    mock_run(requests_mock, [{"status": "running"}] * 50)
    with pytest.raises(
        ScriptRunnerJobError, match=rf"job {JOB} did not finish within timeout=12 s; it was canceled"
    ):
        run_op(timeout=12).execute(make_context())
    assert len(posts(requests_mock, f"/jobs/{JOB}/cancel")) == 1


# -- deferrable -------------------------------------------------------------------------------


def test_deferrable_defers_with_the_right_trigger(conn, requests_mock):
    mock_run(requests_mock, [{"status": "running"}])
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        run_op(deferrable=True, poll_interval=7, timeout=60, cancel_on_kill=False).execute(make_context())
    trigger = info.value.trigger
    assert isinstance(trigger, ScriptRunnerJobTrigger)
    assert info.value.method_name == "execute_complete"
    assert (trigger.job_id, trigger.scriptrunner_conn_id, trigger.poll_interval, trigger.cancel_on_kill) == (
        JOB,
        "scriptrunner_default",
        7.0,
        False,
    )
    assert (trigger.deadline.limit, trigger.deadline.seconds) == ("timeout", 60.0)
    assert before + 60 <= trigger.deadline.at <= time.time() + 60  # no start_date: counted from now
    kwargs = trigger.serialize()[1]
    assert kwargs["idle"] is None  # idle_timeout is off
    assert ScriptRunnerJobTrigger(**json.loads(json.dumps(kwargs))).deadline == trigger.deadline


def test_deferrable_does_not_defer_when_the_job_already_finished(conn, requests_mock):
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=b"done\n")
    result = run_op(deferrable=True).execute(make_context())
    assert result["stdout"] == "done\n"


NAME = f"script 'quick-echo' (job {JOB})"


@pytest.mark.parametrize(
    ("final", "expect"),
    [
        ({"status": "succeeded"}, None),
        ({"status": "failed", "code": 4}, f"{NAME} failed with exit code 4. End of stderr:\nboom"),
        (
            {"status": "timed_out", "code": -1},
            f"{NAME} timed out: the server's script timeout (timeoutSec in its scripts.json) fired and stopped it",
        ),
        ({"status": "canceled", "code": -1}, f"{NAME} was canceled on the server"),
        (
            {"status": "failed", "code": -1},
            (
                f"{NAME} ended with code -1: the script was killed by a signal, or lost when the "
                "script-runner server restarted (the server reports both the same way)"
            ),
        ),
        ({"status": "failed", "code": 3}, AirflowSkipException),
    ],
)
def test_execute_complete_judges_the_job_the_server_reports(conn, requests_mock, final, expect):
    mock_run(requests_mock, [final], stdout=b"out\n", stderr=b"boom\n")
    # The event's job disagrees with the server: the task must go by the job it reads back by id.
    stale = {"status": "failed", "code": 9} if final["status"] == "succeeded" else {"status": "succeeded"}
    event = JobEvent(EventKind.ENDED, "m", JOB, ScriptRunnerJob.from_api(job_body(JOB, **stale))).to_dict()
    event = json.loads(json.dumps(event))
    op = run_op(deferrable=True, skip_on_exit_code=3)
    if expect is None:
        result = op.execute_complete(make_context(), event)
        assert (result["status"], result["exit_code"], result["stdout"]) == ("succeeded", 0, "out\n")
    elif expect is AirflowSkipException:
        with pytest.raises(AirflowSkipException) as skip:
            op.execute_complete(make_context(), event)
        assert str(skip.value) == f"{NAME} exited with code 3, which is in skip_on_exit_code: skipping"
    else:
        with pytest.raises(ScriptRunnerJobError) as failure:
            op.execute_complete(make_context(), event)
        assert str(failure.value) == expect
        assert failure.value.job.exit_code == final["code"]
    assert [r.path for r in requests_mock.request_history].count(f"/jobs/{JOB}") == 1  # read back once


@pytest.mark.parametrize("trigger_canceled", [True, False])
def test_execute_complete_timeout_event_cancels_only_when_the_trigger_did_not(
    conn, requests_mock, trigger_canceled
):
    mock_run(requests_mock, [{"status": "running"}])
    message = f"job {JOB} did not finish within execution_timeout=30 s; it was canceled"
    event = JobEvent(
        EventKind.TIMEOUT, message, JOB, limit="execution_timeout", canceled=trigger_canceled
    ).to_dict()
    with pytest.raises(ScriptRunnerJobError, match=r"within execution_timeout=30 s"):
        run_op(deferrable=True).execute_complete(make_context(), event)
    # Exactly one cancel per job and reason: the trigger's, or (when it could not) this one.
    assert len(posts(requests_mock, f"/jobs/{JOB}/cancel")) == (0 if trigger_canceled else 1)


def test_execute_complete_error_event_cancels_the_job(conn, requests_mock):
    mock_run(requests_mock, [{"status": "running"}])
    op = run_op(deferrable=True)
    with pytest.raises(ScriptRunnerJobError, match="gave up"):
        op.execute_complete(make_context(), JobEvent(EventKind.ERROR, "gave up following", JOB).to_dict())
    op.on_kill()  # a later kill of the same try does not cancel a second time
    assert len(posts(requests_mock, f"/jobs/{JOB}/cancel")) == 1


# -- the event of another try's trigger --------------------------------------------------------------


def try_key(try_number=1, **ids):
    """An event's ``task``: the try of the task instance its trigger was fired for."""
    return {**TASK_IDS, **ids, "try_number": try_number}


def stray_event(**key):
    """The event of a trigger fired for the try ``key``: job JOB failed."""
    job = ScriptRunnerJob.from_api(job_body(JOB, "failed", code=1))
    event = JobEvent(EventKind.ENDED, f"{NAME} failed with exit code 1", JOB, job, task=try_key(**key))
    return json.loads(json.dumps(event.to_dict()))


def own_job_context(variables, job_id="job_new_2", **ti):
    """A try that submitted ``job_id`` (its XCom and the task's record) and deferred."""
    context = make_context(variables, **ti)
    context["ti"].xcom["job_id"] = job_id
    variables.values[RECORD] = job_id
    return context


def test_an_event_of_an_earlier_tries_trigger_is_ignored_and_the_own_job_followed(
    conn, requests_mock, variables, task_log
):
    # Try 1's trigger fired into try 2 (a reused trigger id): try 2 waits again for its own job.
    requests_mock.get(f"{BASE_URL}/jobs/job_new_2", json=job_body("job_new_2", "running"))
    context = own_job_context(variables, try_number=2)
    with pytest.raises(TaskDeferred) as info:
        run_op(deferrable=True, timeout=60).execute_complete(context, stray_event(try_number=1))
    trigger = info.value.trigger
    assert (trigger.job_id, info.value.method_name) == ("job_new_2", "execute_complete")
    assert (trigger.deadline.limit, trigger.deadline.seconds) == ("timeout", 60.0)
    assert context["ti"].xcom["scriptrunner_owner"] == {"try": 2, "job_id": "job_new_2"}
    # The other try's job is neither judged nor canceled: it is not this try's.
    assert [(r.method, r.path) for r in requests_mock.request_history] == [("GET", "/jobs/job_new_2")]
    assert (
        "Ignoring the event of another try's trigger ({'dag_id': 'etl', 'run_id': 'manual__2026-01-01', "
        "'task_id': 'run', 'map_index': -1, 'try_number': 1}, job job_100_1): this is try 2; "
        "following its job job_new_2"
    ) in task_log.text
    assert variables.values == {RECORD: "job_new_2"}


@pytest.mark.parametrize(
    "key",
    [
        {"try_number": 1},
        {"try_number": 3},
        {"try_number": 2, "task_id": "other"},
        {"try_number": 2, "map_index": 4},
        {"try_number": 2, "run_id": "manual__2026-01-02"},
        {"try_number": 2, "dag_id": "other_dag"},
    ],
    ids=["earlier-try", "later-try", "other-task", "other-map-index", "other-run", "other-dag"],
)
def test_a_stray_event_finishes_with_the_own_job_when_it_has_ended(conn, requests_mock, variables, key):
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=b"mine\n", job_id="job_new_2")
    result = run_op(deferrable=True).execute_complete(
        own_job_context(variables, try_number=2), stray_event(**key)
    )
    assert (result["job_id"], result["status"], result["stdout"]) == ("job_new_2", "succeeded", "mine\n")
    assert [r.path for r in requests_mock.request_history if JOB in r.path] == []
    assert variables.values == {}  # the own job ended: its record is cleared


def test_a_stray_event_fails_the_try_only_for_its_own_jobs_failure(conn, requests_mock, variables):
    mock_run(requests_mock, [{"status": "failed", "code": 4}], stderr=b"own boom\n", job_id="job_new_2")
    with pytest.raises(ScriptRunnerJobError) as info:
        run_op(deferrable=True).execute_complete(
            own_job_context(variables, try_number=2), stray_event(try_number=1)
        )
    assert str(info.value) == (
        "script 'quick-echo' (job job_new_2) failed with exit code 4. End of stderr:\nown boom"
    )
    assert info.value.job.job_id == "job_new_2"


def test_a_stray_event_without_a_known_job_of_this_try_fails(conn, requests_mock, variables):
    with pytest.raises(ScriptRunnerJobError) as info:
        run_op(deferrable=True).execute_complete(
            make_context(variables, try_number=2), stray_event(try_number=1)
        )
    assert str(info.value) == "this try's job is not known (the event received was job job_100_1's)"
    assert requests_mock.call_count == 0


@pytest.mark.parametrize(
    ("task", "ti"),
    [
        (None, {"try_number": 2}),
        (try_key(try_number=2), {"try_number": 2}),
        (try_key(try_number=2), {"try_number": 2, "map_index": None}),  # unmapped either way
        (try_key(try_number=2), {"try_number": None}),  # a try of unknown number: not a stranger
    ],
    ids=["no-task", "this-try", "map-index-none", "no-try-number"],
)
def test_an_event_of_this_try_is_handled_as_its_own(conn, requests_mock, variables, task, ti):
    mock_run(requests_mock, [{"status": "succeeded"}], stdout=b"out\n")
    variables.values[RECORD] = JOB
    event = json.loads(json.dumps(JobEvent(EventKind.ENDED, "ok", JOB, task=task).to_dict()))
    result = run_op(deferrable=True).execute_complete(make_context(variables, **ti), event)
    assert (result["job_id"], result["stdout"]) == (JOB, "out\n")
    assert variables.values == {}


# -- cancel on kill ---------------------------------------------------------------------------


def test_on_kill_cancels_the_job(conn, requests_mock):
    mock_run(requests_mock, [{"status": "running"}])
    op = run_op()
    op.on_kill()  # nothing submitted yet: nothing to cancel
    assert requests_mock.call_count == 0
    op.job_id = JOB
    op.on_kill()
    assert len(posts(requests_mock, f"/jobs/{JOB}/cancel")) == 1


def test_on_kill_respects_cancel_on_kill_false(conn, requests_mock):
    op = run_op(cancel_on_kill=False)
    op.job_id = JOB
    op.on_kill()
    assert requests_mock.call_count == 0


def test_on_kill_never_raises(conn, requests_mock, task_log):
    requests_mock.post(f"{BASE_URL}/jobs/{JOB}/cancel", status_code=503, text="")
    op = run_op()
    op.job_id = JOB
    op.on_kill()
    assert "Could not cancel job" in task_log.text


# -- reruns: the job record (an Airflow Variable) ---------------------------------------------------


def test_job_id_is_recorded_at_submit_and_cleared_after_the_end(conn, requests_mock, variables):
    mock_run(requests_mock, [{"status": "succeeded"}])
    run_op().execute(make_context(variables))
    assert variables.sets == [("scriptrunner_job__etl__manual__2026-01-01__run__-1", JOB)]
    assert variables.descriptions == {
        "scriptrunner_job__etl__manual__2026-01-01__run__-1": (
            "script-runner job of a running task (airflow-provider-scriptrunner)"
        )
    }
    assert variables.values == {}


def test_the_record_is_kept_while_the_task_is_deferred(conn, requests_mock, variables):
    mock_run(requests_mock, [{"status": "running"}])
    with pytest.raises(TaskDeferred):
        run_op(deferrable=True).execute(make_context(variables))
    assert variables.values == {"scriptrunner_job__etl__manual__2026-01-01__run__-1": JOB}


def test_each_mapped_task_instance_has_a_record_of_its_own(conn, requests_mock, variables):
    mock_run(requests_mock, [{"status": "running"}])
    for map_index in (0, 1):
        with pytest.raises(TaskDeferred):
            run_op(deferrable=True).execute(make_context(variables, map_index=map_index))
    assert variables.values == {
        "scriptrunner_job__etl__manual__2026-01-01__run__0": JOB,
        "scriptrunner_job__etl__manual__2026-01-01__run__1": JOB,
    }


def test_a_new_try_reattaches_to_a_running_job(conn, requests_mock, variables, task_log):
    mock_run(
        requests_mock,
        [{"status": "running"}, {"status": "running"}, {"status": "succeeded"}],
        job_id="job_old_1",
        stdout=b"x\n",
    )
    variables.values[RECORD] = "job_old_1"
    result = run_op().execute(make_context(variables, try_number=2))
    assert posts(requests_mock) == []
    assert result["job_id"] == "job_old_1"
    assert "Reattaching to job job_old_1 from an earlier try (still running)" in task_log.text
    assert variables.values == {}  # the job ended: nothing left to reattach to


def test_a_retry_of_a_deferred_task_reattaches_and_defers_again(conn, requests_mock, variables):
    mock_run(requests_mock, [{"status": "running"}], job_id="job_old_1")
    variables.values[RECORD] = "job_old_1"
    context = make_context(variables, try_number=2, max_tries=2)
    with pytest.raises(TaskDeferred) as info:
        run_op(deferrable=True, retries=2).execute(context)
    assert info.value.trigger.job_id == "job_old_1"
    assert posts(requests_mock) == []
    # The owner of the job is now this try: the trigger of try 1 leaves the job to it.
    assert context["ti"].xcom["scriptrunner_owner"] == {"try": 2, "job_id": "job_old_1"}
    assert variables.values == {RECORD: "job_old_1"}


@pytest.mark.parametrize("old_state", ["succeeded", "failed", "canceled"])
def test_a_new_try_after_the_job_ended_runs_the_script_again(conn, requests_mock, variables, old_state):
    requests_mock.get(f"{BASE_URL}/jobs/job_old_1", json=job_body("job_old_1", old_state))
    mock_run(requests_mock, [{"status": "succeeded"}], job_id="job_new_2")
    variables.values[RECORD] = "job_old_1"
    result = run_op().execute(make_context(variables, try_number=2))
    assert len(posts(requests_mock)) == 1
    assert result["job_id"] == "job_new_2"
    assert variables.sets == [(RECORD, "job_new_2")] and variables.values == {}


def test_a_retry_takes_the_result_of_an_earlier_try_whose_job_succeeded(
    conn, requests_mock, variables, task_log
):
    # Try 1 of a task with retries=2 died after its job ended: try 2 (max_tries 2) is a retry.
    requests_mock.get(
        f"{BASE_URL}/jobs/job_old_1",
        json=job_body("job_old_1", "succeeded", stdoutSize=6, stdoutPreview="done!\n"),
    )
    variables.values[RECORD] = "job_old_1"
    context = make_context(variables, try_number=2, max_tries=2)
    result = run_op(retries=2).execute(context)
    assert posts(requests_mock) == []
    assert (result["job_id"], result["status"], result["stdout"]) == ("job_old_1", "succeeded", "done!\n")
    assert context["ti"].xcom["job_id"] == "job_old_1"
    assert "[stdout] done!" in task_log.text
    assert "Job job_old_1 of an earlier try already succeeded, but that try did not finish" in task_log.text
    assert variables.values == {}


def test_a_deferrable_retry_takes_the_result_without_deferring(conn, requests_mock, variables):
    requests_mock.get(f"{BASE_URL}/jobs/job_old_1", json=job_body("job_old_1", "succeeded"))
    variables.values[RECORD] = "job_old_1"
    result = run_op(deferrable=True, retries=1).execute(make_context(variables, try_number=2, max_tries=1))
    assert (result["job_id"], result["status"]) == ("job_old_1", "succeeded")
    assert posts(requests_mock) == [] and variables.values == {}


@pytest.mark.parametrize(
    ("old_state", "try_number", "max_tries", "why"),
    [
        ("succeeded", 3, 4, "a user cleared the task: its first try since the clear reruns the script"),
        ("succeeded", 1, 2, "the first try"),
        ("failed", 2, 2, "a retry after a failed job is what retries are for"),
        ("canceled", 2, 2, "a retry after a canceled job"),
    ],
)
def test_the_script_runs_again_unless_a_retry_finds_a_success(
    conn, requests_mock, variables, old_state, try_number, max_tries, why
):
    requests_mock.get(f"{BASE_URL}/jobs/job_old_1", json=job_body("job_old_1", old_state))
    mock_run(requests_mock, [{"status": "succeeded"}], job_id="job_new_2")
    variables.values[RECORD] = "job_old_1"
    context = make_context(variables, try_number=try_number, max_tries=max_tries)
    assert run_op(retries=2).execute(context)["job_id"] == "job_new_2", why
    assert len(posts(requests_mock)) == 1


def test_a_try_killed_mid_job_is_retried_on_the_same_job(conn, requests_mock, variables):
    # Try 1 submits, then its process dies (SIGKILL: no on_kill, no cleanup); try 2 follows the job.
    mock_run(requests_mock, [{"status": "running"}], job_id="job_old_1")
    with pytest.raises(TaskDeferred):
        run_op(deferrable=True, retries=1).execute(make_context(variables, try_number=1, max_tries=1))
    assert variables.values == {RECORD: "job_old_1"}
    requests_mock.get(
        f"{BASE_URL}/jobs/job_old_1",
        [{"json": job_body("job_old_1", "running")}, {"json": job_body("job_old_1", "succeeded")}],
    )
    result = run_op(retries=1).execute(make_context(variables, try_number=2, max_tries=1))
    assert result["job_id"] == "job_old_1"
    assert len(posts(requests_mock)) == 1  # try 1's submit only
    assert variables.values == {}


def test_a_forgotten_job_is_not_reattached(conn, requests_mock, variables):
    requests_mock.get(
        f"{BASE_URL}/jobs/job_old_1",
        status_code=404,
        json={"ok": False, "error": {"code": "JOB_NOT_FOUND", "message": "job not found"}},
    )
    mock_run(requests_mock, [{"status": "succeeded"}], job_id="job_new_2")
    variables.values[RECORD] = "job_old_1"
    assert run_op().execute(make_context(variables, try_number=2))["job_id"] == "job_new_2"
    assert variables.sets == [(RECORD, "job_new_2")]


def test_reattach_false_cancels_the_previous_job_before_submitting(conn, requests_mock, variables):
    old = f"{BASE_URL}/jobs/job_old_1"
    requests_mock.get(
        old,
        [
            {"json": job_body("job_old_1", "running")},
            {"json": job_body("job_old_1", "running")},
            {"json": job_body("job_old_1", "canceled")},
        ],
    )
    requests_mock.post(f"{old}/cancel", json=job_body("job_old_1", "running"))
    mock_run(requests_mock, [{"status": "succeeded"}], job_id="job_new_2")
    variables.values[RECORD] = "job_old_1"
    assert run_op(reattach=False).execute(make_context(variables, try_number=2))["job_id"] == "job_new_2"
    calls = [(r.method, r.path) for r in requests_mock.request_history]
    # The old copy is canceled and seen ended before the script is started again.
    assert calls.index(("POST", "/jobs/job_old_1/cancel")) < calls.index(("POST", "/run"))
    assert calls.index(("GET", "/jobs/job_old_1")) < calls.index(("POST", "/run"))
    assert [c for c in calls if c[1] == "/jobs/job_old_1"][-1] == ("GET", "/jobs/job_old_1")
    assert variables.sets == [(RECORD, "job_new_2")]


def test_reattach_false_refuses_a_second_copy_when_the_first_will_not_stop(
    conn, requests_mock, variables, monkeypatch
):
    clock = iter(range(0, 10000, 7))
    monkeypatch.setattr(ops.time, "monotonic", lambda: float(next(clock)))
    requests_mock.get(f"{BASE_URL}/jobs/job_old_1", json=job_body("job_old_1", "running"))
    requests_mock.post(f"{BASE_URL}/jobs/job_old_1/cancel", json=job_body("job_old_1", "running"))
    mock_run(requests_mock, [{"status": "succeeded"}], job_id="job_new_2")
    variables.values[RECORD] = "job_old_1"
    with pytest.raises(ScriptRunnerJobError, match="not starting a second copy"):
        run_op(reattach=False).execute(make_context(variables, try_number=2))
    assert posts(requests_mock) == []
    assert variables.values == {RECORD: "job_old_1"}  # still the job of the task: the next try sees it


def test_without_task_ids_every_try_submits(conn, requests_mock, variables):
    mock_run(requests_mock, [{"status": "succeeded"}, {"status": "succeeded"}])
    run_op().execute(make_context())
    run_op().execute(make_context())
    assert len(posts(requests_mock)) == 2
    assert variables.sets == []


# -- submit, cancel, logs ---------------------------------------------------------------------


def test_submit_returns_job_id(conn, requests_mock):
    mock_run(requests_mock, [{"status": "queued"}])
    context = make_context()
    op = ScriptRunnerSubmitScriptOperator(task_id="submit", script_id="slow", args=["5"])
    assert op.execute(context) == JOB
    assert context["ti"].xcom["job_id"] == JOB
    assert posts(requests_mock)[0].json()["mode"] == "async"


def test_cancel_waits_until_canceled(conn, requests_mock):
    requests_mock.post(f"{JOB_URL}/cancel", json=job_body(JOB, "running"))
    requests_mock.get(JOB_URL, [{"json": job_body(JOB, "running")}, {"json": job_body(JOB, "canceled")}])
    context = make_context()
    assert ScriptRunnerCancelJobOperator(task_id="cancel", job_id=JOB).execute(context) == "canceled"
    assert requests_mock.call_count == 3
    assert context["ti"].xcom["job_url"] == JOB_URL  # for the task's "Script Runner Job" link


def test_cancel_of_a_finished_job_is_a_no_op(conn, requests_mock, task_log):
    requests_mock.post(f"{JOB_URL}/cancel", json=job_body(JOB, "succeeded"))
    assert ScriptRunnerCancelJobOperator(task_id="cancel", job_id=JOB).execute(make_context()) == "succeeded"
    assert "had already ended (succeeded); nothing to cancel" in task_log.text


def test_cancel_of_an_unknown_job_fails(conn, requests_mock):
    requests_mock.post(
        f"{BASE_URL}/jobs/nope/cancel",
        status_code=404,
        json={"ok": False, "error": {"code": "JOB_NOT_FOUND", "message": "job not found"}},
    )
    with pytest.raises(AirflowFailException, match="JOB_NOT_FOUND") as info:
        ScriptRunnerCancelJobOperator(task_id="cancel", job_id="nope").execute(make_context())
    assert type(info.value.__cause__) is ScriptRunnerJobNotFoundError
    assert str(info.value).endswith(NOT_RETRIED)


def test_cancel_wait_is_bounded(conn, requests_mock, monkeypatch):
    clock = iter(range(1000))
    monkeypatch.setattr(ops.time, "monotonic", lambda: float(next(clock)))
    requests_mock.post(f"{JOB_URL}/cancel", json=job_body(JOB, "running"))
    requests_mock.get(JOB_URL, json=job_body(JOB, "running"))
    with pytest.raises(ScriptRunnerJobError, match="still running after 3 s"):
        ScriptRunnerCancelJobOperator(task_id="cancel", job_id=JOB, wait_timeout=3).execute(make_context())


def test_logs_operator_returns_both_streams(conn, requests_mock, task_log):
    requests_mock.get(JOB_URL, json=job_body(JOB, "succeeded", stdoutSize=9, stderrSize=0))
    requests_mock.get(
        f"{JOB_URL}/logs", json=log_page_callback({"stdout": "a\nbé\nc\n".encode(), "stderr": b""})
    )
    context = make_context()
    result = ScriptRunnerGetJobLogsOperator(task_id="logs", job_id=JOB).execute(context)
    assert context["ti"].xcom["job_url"] == JOB_URL
    assert result["stdout"] == {
        "data": "a\nbé\nc\n",
        "offset": 0,
        "next_offset": 8,
        "total_size": 8,
        "truncated": False,
    }
    assert result["stderr"]["data"] == "" and result["stderr"]["total_size"] == 0
    assert "[stdout] bé" in task_log.text


def test_logs_operator_offset_and_limit(conn, requests_mock):
    requests_mock.get(JOB_URL, json=job_body(JOB, "succeeded"))
    requests_mock.get(f"{JOB_URL}/logs", json=log_page_callback({"stdout": b"0123456789", "stderr": b""}))
    result = ScriptRunnerGetJobLogsOperator(
        task_id="logs", job_id=JOB, stream="stdout", offset=2, limit=5
    ).execute(make_context())
    assert result["stdout"]["data"] == "23456"
    assert result["stdout"]["next_offset"] == 7 and result["stdout"]["total_size"] == 10
    assert "stderr" not in result


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"offset": -1}, "offset must be"), ({"limit": 0}, "limit must be")]
)
def test_logs_operator_bad_arguments_fail_when_the_dag_is_parsed(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScriptRunnerGetJobLogsOperator(task_id="logs", job_id=JOB, **kwargs)


def test_logs_operator_bad_templated_input_fails_without_retries(conn, requests_mock):
    with pytest.raises(AirflowFailException, match="stream must be 'stdout', 'stderr' or 'both', got 'all'"):
        ScriptRunnerGetJobLogsOperator(task_id="logs", job_id=JOB, stream="all").execute(make_context())
    requests_mock.get(
        f"{BASE_URL}/jobs/nope",
        status_code=404,
        json={"ok": False, "error": {"code": "JOB_NOT_FOUND", "message": "job not found"}},
    )
    with pytest.raises(AirflowFailException, match="JOB_NOT_FOUND") as info:
        ScriptRunnerGetJobLogsOperator(task_id="logs", job_id="nope").execute(make_context())
    assert type(info.value.__cause__) is ScriptRunnerJobNotFoundError
    assert requests_mock.call_count == 1


# -- the task's link to its job ----------------------------------------------------------------


@pytest.fixture
def no_xcom_reads(monkeypatch):
    """The link is asked for in the task's own process: reading XCom there logs a misleading error."""

    def fail(*args, **kwargs):
        raise AssertionError("the job link must not read XCom")

    monkeypatch.setattr(_compat.XCom, "get_value", fail)
    monkeypatch.setattr(_compat.XCom, "get_one", fail)


def link_of(op) -> str:
    return ScriptRunnerJobLink().get_link(op, ti_key=None)


def test_job_link_points_at_the_job_after_a_run(conn, requests_mock, no_xcom_reads):
    mock_run(requests_mock, [{"status": "succeeded"}])
    op = run_op()
    assert ScriptRunnerJobLink.name == "Script Runner Job"
    assert [type(link) for link in op.operator_extra_links] == [ScriptRunnerJobLink]
    assert link_of(op) == ""
    op.execute(make_context())
    assert link_of(op) == JOB_URL


def test_job_link_is_empty_for_a_task_that_failed_before_submitting(conn, requests_mock, no_xcom_reads):
    op = run_op(args="orders 2024-01-01")
    with pytest.raises(AirflowFailException, match="args must be a list"):
        op.execute(make_context())
    assert requests_mock.call_count == 0
    assert link_of(op) == ""


def test_job_link_is_known_after_execute_complete(conn, requests_mock, no_xcom_reads):
    # execute_complete runs on a fresh operator (a new worker process): the event names the job.
    mock_run(requests_mock, [{"status": "succeeded"}])
    op = run_op(deferrable=True)
    op.execute_complete(make_context(), JobEvent(EventKind.ENDED, "ok", JOB).to_dict())
    assert link_of(op) == JOB_URL
    # Also when the deferral ended in a failure.
    failed = run_op(deferrable=True)
    event = JobEvent(EventKind.TIMEOUT, "too slow", JOB, limit="timeout", canceled=True).to_dict()
    with pytest.raises(ScriptRunnerJobError, match="too slow"):
        failed.execute_complete(make_context(), event)
    assert link_of(failed) == JOB_URL


def test_job_link_of_the_job_operators(conn, requests_mock, no_xcom_reads):
    mock_run(requests_mock, [{"status": "succeeded"}])
    submit = ScriptRunnerSubmitScriptOperator(task_id="submit", script_id="slow")
    submit.execute(make_context())
    logs = ScriptRunnerGetJobLogsOperator(task_id="logs", job_id=JOB)
    logs.execute(make_context())
    assert (link_of(submit), link_of(logs)) == (JOB_URL, JOB_URL)
