"""
Deferred mode on par with the worker, against the bundled server over real loopback HTTP.

The deferred runs go the way Airflow takes them: ``execute`` defers, the trigger is rebuilt from
its serialized (JSON) form as a triggerer would and runs to its event, the event goes through
JSON, and ``execute_complete`` runs on a fresh copy of the operator (a new task process).
Every log line is captured with the moment it was written and the phase that wrote it
(``execute``, ``trigger`` or ``resume``), so a test can tell live output from output written
once the job had ended.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import itertools
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog.testing

from airflow_provider_scriptrunner._compat import TaskDeferred
from airflow_provider_scriptrunner.client.errors import ScriptRunnerJobError
from airflow_provider_scriptrunner.client.models import JobStatus
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook
from airflow_provider_scriptrunner.operators.scriptrunner import ScriptRunnerRunScriptOperator
from airflow_provider_scriptrunner.sensors.scriptrunner import ScriptRunnerJobSensor
from airflow_provider_scriptrunner.task.output import TRUNCATION_MARKER
from airflow_provider_scriptrunner.task.ownership import Owner
from airflow_provider_scriptrunner.testing import process_alive
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger
from tests.operators.test_scriptrunner_operators import FakeVariables

#: Writes the steps of a plan file (JSON: ``[[stream, hex bytes, pause seconds], ...]``) to
#: stdout ("out") or stderr ("err"), flushing after each; records its pid in ``<plan>.pid``.
EMIT_SOURCE = """
import json, os, sys, time
plan = sys.argv[1]
with open(plan + ".pid", "a") as marks:
    marks.write(f"{os.getpid()}\\n")
code = 0
for stream, data, pause in json.load(open(plan)):
    if stream == "exit":
        code = int(bytes.fromhex(data))
        continue
    out = sys.stdout.buffer if stream == "out" else sys.stderr.buffer
    out.write(bytes.fromhex(data))
    out.flush()
    if pause:
        time.sleep(pause)
sys.exit(code)
"""

#: Result fields that differ between two runs of the same script.
RUN_SPECIFIC = ("job_id", "duration_ms", "started_at", "ended_at")
#: Settings every test server gets explicitly (the bundled server's defaults may change).
BASE_SERVER = {
    "maxConcurrent": 1,
    "defaultMode": "sync",
    "maxLogBytesPerStream": 1048576,
    "previewMaxBytes": 4096,
}


@pytest.fixture
def scriptrunner_scripts(tmp_path):
    emit = tmp_path / "emit.py"
    emit.write_text(EMIT_SOURCE)
    return {"emit": {"body": f'#!/bin/sh\nexec "{sys.executable}" "{emit}" "$1"\n'}}


@pytest.fixture
def scriptrunner_server_config(request):
    """:data:`BASE_SERVER`, updated by a test's indirect ``scriptrunner_server_config`` parameter."""
    return {**BASE_SERVER, **getattr(request, "param", {})}


# -- helpers ----------------------------------------------------------------------------------------


class Plan:
    """A plan file for the ``emit`` script, and what the script wrote about its runs."""

    def __init__(self, path: Path, steps: Sequence[tuple[str, bytes | str, float]]) -> None:
        self.path = path
        self.steps = [(s, d.encode() if isinstance(d, str) else d, p) for s, d, p in steps]
        path.write_text(json.dumps([[s, d.hex(), p] for s, d, p in self.steps]))

    @property
    def args(self) -> list[str]:
        return [str(self.path)]

    def output(self, stream: str) -> bytes:
        return b"".join(d for s, d, _ in self.steps if s == stream)

    def pids(self) -> list[int]:
        try:
            return [int(line) for line in Path(f"{self.path}.pid").read_text().split()]
        except FileNotFoundError:
            return []


@pytest.fixture
def plan(tmp_path) -> Any:
    numbers = itertools.count()

    def make(*steps: tuple[str, bytes | str, float]) -> Plan:
        return Plan(tmp_path / f"plan-{next(numbers)}.json", steps)

    return make


class FakeTI:
    """What the run operator and the sensor use of a task instance."""

    def __init__(self, run_id: str, start_date: datetime | None = None) -> None:
        self.xcom: dict[str, Any] = {}
        self.dag_id, self.run_id, self.task_id, self.map_index = "deferred_mode", run_id, "run", -1
        self.try_number = 1
        self.start_date = start_date

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = json.loads(json.dumps(value))  # XCom values are JSON

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcom.get(key)


@pytest.fixture(autouse=True)
def variables(monkeypatch: pytest.MonkeyPatch) -> FakeVariables:
    """Where the run operator records its job (an Airflow Variable), in memory."""
    return FakeVariables.install(monkeypatch)


_RUN_IDS = itertools.count()


def context(started_ago: float = 0.0) -> dict[str, Any]:
    """A try of a task instance of its own (its own job record) that started ``started_ago`` seconds ago."""
    started = datetime.now(timezone.utc) - timedelta(seconds=started_ago)
    return {"ti": FakeTI(f"manual__{next(_RUN_IDS)}", started)}


@dataclass
class Line:
    text: str
    at: float
    phase: str


@dataclass
class Log:
    """Every log entry of a run, with when it was written and by which phase."""

    entries: list[dict[str, Any]]
    phase: list[str] = field(default_factory=lambda: ["execute"])

    def messages(self) -> list[str]:
        return [e["event"] for e in self.entries]

    def text(self) -> str:
        return "\n".join(self.messages())

    def lines(self, stream: str, phase: str | None = None) -> list[Line]:
        prefix = f"[{stream}] "
        return [
            Line(e["event"][len(prefix) :], e["at"], e["phase"])
            for e in self.entries
            if e["event"].startswith(prefix) and (phase is None or e["phase"] == phase)
        ]

    def texts(self, stream: str, phase: str | None = None) -> list[str]:
        return [line.text for line in self.lines(stream, phase)]

    def count(self, needle: str) -> int:
        return sum(needle in message for message in self.messages())


@pytest.fixture
def log() -> Iterator[Log]:
    phase = ["execute"]

    def stamp(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        args = event.pop("positional_args", None)
        event["event"] = str(event.get("event", "")) % args if args else str(event.get("event", ""))
        event["at"] = time.time()
        event["phase"] = phase[0]
        return event

    with structlog.testing.capture_logs(processors=[stamp]) as entries:
        yield Log(entries, phase)


@dataclass
class Run:
    result: Any = None
    error: BaseException | None = None
    event: dict[str, Any] | None = None
    deferred: bool = False
    seconds: float = 0.0
    op: Any = None


def rebuilt(trigger: Any) -> Any:
    """The trigger as a triggerer gets it: from its serialized form, through JSON."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))


def fire(trigger: Any, ti: Any) -> dict[str, Any]:
    """Run ``trigger`` (rebuilt) for the task instance ``ti`` to its first event, as it reaches the task: JSON."""
    trigger = rebuilt(trigger)
    trigger.task_instance = ti  # as the triggerer sets it

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return json.loads(json.dumps(asyncio.run(first_event())))


def run_task(op: Any, ctx: dict[str, Any], log: Log) -> Run:
    """Run ``op`` as Airflow would, worker or deferred, and record what happened."""
    run = Run(op=op)
    fresh = copy.deepcopy(op)  # what the resumed try's new process gets
    started = time.monotonic()
    try:
        try:
            log.phase[0] = "execute"
            run.result = op.execute(ctx)
        except TaskDeferred as deferred:
            run.deferred = True
            log.phase[0] = "trigger"
            run.event = fire(deferred.trigger, ctx["ti"])
            log.phase[0] = "resume"
            run.op = fresh
            run.result = getattr(fresh, deferred.method_name)(ctx, run.event)
    except Exception as err:
        run.error = err
    run.seconds = time.monotonic() - started
    log.phase[0] = "done"
    return run


def run_op(log: Log, deferrable: bool, ctx: dict[str, Any] | None = None, **kwargs: Any) -> Run:
    kwargs.setdefault("task_id", "run")
    kwargs.setdefault("script_id", "emit")
    kwargs.setdefault("poll_interval", 0.1)
    return run_task(ScriptRunnerRunScriptOperator(deferrable=deferrable, **kwargs), ctx or context(), log)


def lines_of(data: bytes) -> list[str]:
    """The lines a log shows for a stream's bytes (a last line without a newline counts)."""
    text = data.decode()
    lines = text.split("\n")
    return lines[:-1] if text.endswith("\n") else lines


def ended_at(job_id: str) -> float:
    job = ScriptRunnerHook().get_job(job_id)
    return datetime.fromisoformat(job.ended_at.replace("Z", "+00:00")).timestamp()


def wait_for(predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def assert_canceled_and_gone(job_id: str, plan: Plan) -> None:
    hook = ScriptRunnerHook()
    job = wait_for(lambda: (j := hook.get_job(job_id)).is_terminal and j)
    assert (job.status, job.exit_code) == (JobStatus.CANCELED, -1), job
    (pid,) = plan.pids()
    wait_for(lambda: not process_alive(pid))


def end_of(text: str, max_bytes: int) -> str:
    """The last ``max_bytes`` of ``text``, without a character cut at the front (as the result keeps it)."""
    data = text.encode()
    return data[-max_bytes:].decode("utf-8", errors="ignore") if len(data) > max_bytes else text


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in RUN_SPECIFIC}


# Each character of these is 1 to 4 bytes: 7-byte log pages cut many of them.
MULTIBYTE = "héllo wörld € 😀 中文 𝄞 ß"
SYMBOL = "𝄞".encode()  # 4 bytes, written in two halves below


def live_steps() -> list[tuple[str, bytes | str, float]]:
    """About 1.6 s of output on both streams, one 4-byte character split across two writes."""
    return [
        ("out", "first line\n", 0.3),
        ("out", f"{MULTIBYTE}\n\n", 0.2),
        ("err", "wärning: on stderr\n", 0.2),
        ("out", b"half a symbol: " + SYMBOL[:2], 0.3),  # the job's output ends inside a character
        ("out", SYMBOL[2:] + b" and the rest\n", 0.2),
        ("out", "tab\there, 100 %s and %d literally\n", 0.1),
        ("out", "ß" * 40 + "\n", 0.3),
        ("err", "stderr without a newline at the end", 0.0),
        ("out", "last line without a newline", 0.0),
    ]


# -- live output from the trigger ----------------------------------------------------------------


def test_trigger_logs_a_real_jobs_output_live_once_in_order_byte_exact(scriptrunner_connection, plan, log):
    script = plan(*live_steps())
    run = run_op(log, deferrable=True, args=script.args, log_page_bytes=7)

    assert run.error is None and run.deferred, run.error
    stdout, stderr = script.output("out"), script.output("err")
    # Every line once, in order, exactly as written (no U+FFFD where a page or a write cut a character).
    assert log.texts("stdout") == lines_of(stdout)
    assert log.texts("stderr") == lines_of(stderr)
    # The trigger wrote them all: nothing was left for execute_complete.
    assert [line.phase for line in log.lines("stdout") + log.lines("stderr")] == ["trigger"] * (
        len(lines_of(stdout)) + len(lines_of(stderr))
    )
    # ... while the job ran: the first line is in the log well before the job ended (~1.6 s in).
    end = ended_at(run.result["job_id"])
    assert log.lines("stdout")[0].at < end - 0.8, (log.lines("stdout")[0].at, end)
    assert log.lines("stderr")[0].at < end - 0.3
    # The event says up to where the trigger logged; the result is the whole output.
    assert run.event["log_offsets"] == {"stdout": len(stdout), "stderr": len(stderr)}
    assert (run.result["stdout"], run.result["stderr"]) == (stdout.decode(), stderr.decode())
    assert (run.result["stdout_truncated"], run.result["stderr_truncated"]) == (False, False)


def test_a_deferred_run_records_its_job_until_it_ended_and_its_event_names_the_try(
    scriptrunner_connection, plan, log, variables
):
    ctx = context()
    run = run_op(log, deferrable=True, ctx=ctx, args=plan(("out", "hello\n", 0.3)).args)

    assert run.error is None and run.deferred, run.error
    key = f"scriptrunner_job__deferred_mode__{ctx['ti'].run_id}__run__-1"
    assert variables.sets == [(key, run.result["job_id"])] and variables.values == {}
    assert ctx["ti"].xcom["scriptrunner_owner"] == {"try": 1, "job_id": run.result["job_id"]}
    assert run.event["task"] == {
        "dag_id": "deferred_mode",
        "run_id": ctx["ti"].run_id,
        "task_id": "run",
        "map_index": -1,
        "try_number": 1,
    }


def test_the_event_of_another_tries_trigger_never_ends_this_try(
    scriptrunner_connection, plan, log, variables
):
    # On SQLite a new deferral can get the id of a trigger row just deleted while its trigger still
    # ran: that trigger's event then reaches the new try, which must go by its own job.
    def deferring(script: Plan) -> ScriptRunnerRunScriptOperator:
        return ScriptRunnerRunScriptOperator(
            task_id="run", script_id="emit", args=script.args, deferrable=True, poll_interval=0.1
        )

    hook = ScriptRunnerHook()
    first_try = context()
    with pytest.raises(TaskDeferred) as first:
        deferring(plan(("err", "try 1's job fails\n", 0.5), ("exit", "3", 0.0))).execute(first_try)
    first_job = first.value.trigger.job_id
    wait_for(lambda: hook.get_job(first_job).is_terminal)
    # The task was cleared: try 2 (its XComs cleared) starts a job of its own and defers.
    second_try = {"ti": FakeTI(first_try["ti"].run_id, datetime.now(timezone.utc))}
    second_try["ti"].try_number = 2
    op = deferring(plan(("out", "try 2's job\n", 3.0)))
    resumed = copy.deepcopy(op)
    with pytest.raises(TaskDeferred) as second:
        op.execute(second_try)
    second_job = second.value.trigger.job_id
    assert second_job != first_job

    stray = fire(first.value.trigger, first_try["ti"])  # try 1's trigger: its job failed
    assert (stray["kind"], stray["job"]["exit_code"], stray["task"]["try_number"]) == ("ended", 3, 1)
    with pytest.raises(TaskDeferred) as again:  # try 2's job still runs (3 s): wait for it again
        copy.deepcopy(resumed).execute_complete(second_try, stray)
    assert again.value.trigger.job_id == second_job
    assert hook.get_job(first_job).status is JobStatus.FAILED  # not canceled: it had ended
    result = resumed.execute_complete(second_try, fire(again.value.trigger, second_try["ti"]))

    assert (result["job_id"], result["status"], result["stdout"]) == (
        second_job,
        "succeeded",
        "try 2's job\n",
    )
    assert log.count("Ignoring the event of another try's trigger") == 1
    assert log.count(f"this is try 2; following its job {second_job}") == 1
    assert variables.values == {}


# -- the same result in both modes -----------------------------------------------------------------


def many_lines(prefix: str, count: int) -> bytes:
    return "".join(f"{prefix} {i}: {MULTIBYTE}\n" for i in range(count)).encode()


def output_steps() -> list[tuple[str, bytes | str, float]]:
    """~1.2 s; ~2.6 KB of multi-byte lines on stdout and ~1 KB on stderr, in bursts."""
    steps: list[tuple[str, bytes | str, float]] = [("out", "starting\n", 0.3)]
    for burst in range(3):
        steps += [("out", many_lines(f"out {burst}", 20), 0.1), ("err", many_lines(f"err {burst}", 8), 0.2)]
    return [*steps, ("out", "the very end: 😀", 0.0), ("err", "stderr's very end: €", 0.0)]


@pytest.mark.parametrize(
    ("scriptrunner_server_config", "max_output_bytes", "log_page_bytes"),
    [
        pytest.param({}, 65536, 65536, id="whole-output"),
        pytest.param({}, 100, 7, id="small-max_output_bytes"),  # the kept end starts inside a character
        pytest.param({}, 1, 4096, id="one-byte"),
        pytest.param({"maxLogBytesPerStream": 301, "previewMaxBytes": 50}, 65536, 64, id="server-truncated"),
        pytest.param(
            {"maxLogBytesPerStream": 301, "previewMaxBytes": 50}, 70, 7, id="server-truncated-small-max"
        ),
    ],
    indirect=["scriptrunner_server_config"],
)
def test_deferred_and_worker_runs_return_the_same_result(
    scriptrunner_connection, scriptrunner_server_config, plan, log, max_output_bytes, log_page_bytes
):
    script = plan(*output_steps())
    options = {"args": script.args, "max_output_bytes": max_output_bytes, "log_page_bytes": log_page_bytes}
    worker = run_op(log, deferrable=False, **options)
    worker_lines = {s: log.texts(s) for s in ("stdout", "stderr")}
    del log.entries[:]
    deferred = run_op(log, deferrable=True, **options)
    deferred_lines = {s: log.texts(s) for s in ("stdout", "stderr")}

    assert worker.error is None and deferred.error is None, (worker.error, deferred.error)
    assert deferred.deferred and log.texts("stdout", "trigger"), (
        "the deferred run must have followed the job from the trigger"
    )
    assert comparable(deferred.result) == comparable(worker.result)
    assert deferred.result["job_id"] != worker.result["job_id"]
    # The task log shows the same lines in both modes, each once.
    assert deferred_lines == worker_lines

    stdout, stderr = script.output("out"), script.output("err")
    limit, preview = (
        scriptrunner_server_config["maxLogBytesPerStream"],
        scriptrunner_server_config["previewMaxBytes"],
    )
    truncated = len(stdout) > limit
    for stream, data in (("stdout", stdout), ("stderr", stderr)):
        if len(data) > limit:
            # The stored log stops at the limit; the preview gives the real end, marked as such.
            true_end = data[-preview:].decode("utf-8", errors="replace").lstrip("\ufffd")
            kept = data[:limit].decode("utf-8", errors="replace") + TRUNCATION_MARKER + true_end
            assert worker_lines[stream][-1] == lines_of(data)[-1], "the log ends with the real last line"
        else:
            kept = data.decode()
            assert worker_lines[stream] == lines_of(data)
        assert worker.result[stream] == end_of(kept, max_output_bytes)
        assert worker.result[f"{stream}_truncated"] is (len(data) > min(limit, max_output_bytes))
    if truncated:
        # One warning per truncated stream and run, whoever noticed it first (trigger or task).
        assert log.count("The server truncated stdout of job") == 1
        assert log.count("End of stdout past the truncation") == 1


@pytest.mark.parametrize(
    "scriptrunner_server_config", [{"maxLogBytesPerStream": 200, "previewMaxBytes": 60}], indirect=True
)
def test_failure_quotes_the_true_end_of_truncated_stderr_in_both_modes(scriptrunner_connection, plan, log):
    script = plan(
        ("err", many_lines("noise", 30), 0.3),
        ("err", "the real reason: disk is full\n", 0.0),
        ("exit", "3", 0.0),
    )
    worker = run_op(log, deferrable=False, args=script.args)
    deferred = run_op(log, deferrable=True, args=script.args)

    assert deferred.deferred
    for run in (worker, deferred):
        assert isinstance(run.error, ScriptRunnerJobError), run.error
        assert "failed with exit code 3. End of stderr:" in str(run.error)
        assert str(run.error).rstrip().endswith("the real reason: disk is full"), str(run.error)[-300:]
    assert str(deferred.error).replace(deferred.op.job_id, "JOB") == str(worker.error).replace(
        worker.op.job_id, "JOB"
    )


# -- every limit cancels the job, in both modes -------------------------------------------------------


def ticking(seconds: float) -> list[tuple[str, bytes | str, float]]:
    return [("out", f"tick {i}\n", 0.1) for i in range(int(seconds * 10))]


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_execution_timeout_from_the_tries_start_cancels_the_real_job(
    scriptrunner_connection, plan, log, deferrable
):
    script = plan(*ticking(60))
    # The try started 5 s ago (submitting counts): execution_timeout=6.5 s leaves it ~1.5 s.
    run = run_op(
        log,
        deferrable,
        context(started_ago=5),
        args=script.args,
        execution_timeout=timedelta(seconds=6.5),
        timeout=60,
    )

    assert run.deferred is deferrable
    assert isinstance(run.error, ScriptRunnerJobError), run.error
    job_id = run.op.job_id
    assert f"job {job_id} did not finish within execution_timeout=6.5 s" in str(run.error)
    assert "it was canceled" in str(run.error)
    assert 1.0 <= run.seconds < 4.5, run.seconds  # counted from ti.start_date, not from execute()
    assert_canceled_and_gone(job_id, script)
    assert log.count(f"Canceled job {job_id} because") == 1, (
        log.text()
    )  # one cancel, by whoever saw the limit
    assert log.texts("stdout")[:3] == ["tick 0", "tick 1", "tick 2"]  # the output was followed until then


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_idle_timeout_cancels_a_silent_running_script(scriptrunner_connection, plan, log, deferrable):
    script = plan(("out", "started, now silent\n", 60))
    run = run_op(log, deferrable, args=script.args, idle_timeout=1)

    assert run.deferred is deferrable
    assert isinstance(run.error, ScriptRunnerJobError), run.error
    job_id = run.op.job_id
    assert f"job {job_id} was canceled: no output for 1 s" in str(run.error)
    assert 1.0 <= run.seconds < 4.0, run.seconds
    assert_canceled_and_gone(job_id, script)
    assert log.count(f"Canceled job {job_id} because") == 1, log.text()
    assert log.texts("stdout") == ["started, now silent"]


@pytest.mark.parametrize("scriptrunner_server_config", [{"maxConcurrent": 1}], indirect=True)
@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_idle_timeout_does_not_count_queued_time(
    scriptrunner_connection, scriptrunner_server_config, plan, log, deferrable
):
    hook = ScriptRunnerHook()
    blocker = hook.submit_script("emit", plan(("out", "", 3.0)).args)  # silent, holds the only slot for 3 s
    script = plan(("out", "got the slot\n", 0.3), ("out", "done\n", 0.0))
    run = run_op(log, deferrable, args=script.args, idle_timeout=1)

    assert run.error is None, run.error
    assert run.deferred is deferrable
    job = hook.get_job(run.result["job_id"])
    queued = datetime.fromisoformat(job.started_at.replace("Z", "+00:00")) - datetime.fromisoformat(
        job.created_at.replace("Z", "+00:00")
    )
    assert queued.total_seconds() > 2.0, (
        "the job should have waited in the queue for longer than idle_timeout"
    )
    assert run.result["stdout"] == "got the slot\ndone\n"
    assert hook.get_job(blocker).status is JobStatus.SUCCEEDED


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_idle_timeout_does_not_fire_while_the_script_keeps_printing(
    scriptrunner_connection, plan, log, deferrable
):
    script = plan(*[("out", f"still working {i}\n", 0.4) for i in range(8)])  # ~3.2 s, a line every 0.4 s
    run = run_op(log, deferrable, args=script.args, idle_timeout=1)

    assert run.error is None, run.error
    assert run.deferred is deferrable
    assert run.result["status"] == "succeeded"
    assert log.texts("stdout") == [f"still working {i}" for i in range(8)]


# -- stream_logs=False -------------------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_stream_logs_false_writes_the_output_only_once_the_job_ended(
    scriptrunner_connection, plan, log, deferrable
):
    script = plan(
        ("out", "early line\n", 0.4), ("err", "early on stderr\n", 0.8), ("out", "late line\n", 0.2)
    )
    run = run_op(log, deferrable, args=script.args, stream_logs=False)

    assert run.error is None, run.error
    assert run.deferred is deferrable
    end = ended_at(run.result["job_id"])
    lines = log.lines("stdout") + log.lines("stderr")
    assert [line.text for line in lines] == ["early line", "late line", "early on stderr"]
    assert all(line.at >= end - 0.05 for line in lines), [(line.text, line.at - end) for line in lines]
    assert not log.lines("stdout", "trigger") and not log.lines("stderr", "trigger")
    assert run.result["stdout"] == "early line\nlate line\n" and run.result["stderr"] == "early on stderr\n"


# -- the sensor ----------------------------------------------------------------------------------------


def test_deferred_sensor_with_stream_logs_follows_a_job_submitted_elsewhere(
    scriptrunner_connection, plan, log
):
    script = plan(*live_steps())
    job_id = ScriptRunnerHook().submit_script("emit", script.args)
    sensor = ScriptRunnerJobSensor(
        task_id="watch", job_id=job_id, deferrable=True, poke_interval=0.1, stream_logs=True, log_page_bytes=7
    )
    run = run_task(sensor, context(), log)

    assert run.error is None and run.deferred, run.error
    assert run.result["status"] == "succeeded" and run.result["job_id"] == job_id
    assert log.texts("stdout") == lines_of(script.output("out"))
    assert log.texts("stderr") == lines_of(script.output("err"))
    assert log.lines("stdout")[0].at < ended_at(job_id) - 0.8


# -- stopping a deferred task: the cancel decision survives Airflow cancelling the trigger again --------


@pytest.mark.parametrize("calls_on_kill", [True, False], ids=["airflow-3.3-on_kill", "cancel-only"])
def test_a_trigger_cancelled_again_while_it_decides_still_cancels_its_job(
    scriptrunner_connection, plan, log, monkeypatch, calls_on_kill
):
    # A triggerer cancels the trigger's task on every state sync until the task has finished (the
    # decision reads the task's state through the supervisor, which can take seconds); Airflow 3.3
    # then calls on_kill. The task here was marked failed on the trigger's own try: cancel its job.
    script = plan(*ticking(60))
    hook = ScriptRunnerHook()
    job_id = hook.submit_script("emit", script.args)
    wait_for(lambda: hook.get_job(job_id).status is JobStatus.RUNNING)
    trigger = rebuilt(ScriptRunnerJobTrigger(job_id=job_id, poll_interval=0.1, stream_logs=True))
    trigger.task_instance = SimpleNamespace(
        dag_id="deferred_mode", run_id="manual__1", task_id="run", map_index=-1, try_number=1
    )

    async def state_read_slowly() -> str:
        await asyncio.sleep(1.0)
        return "failed"

    async def owner() -> Owner:
        return Owner(1, job_id)

    monkeypatch.setattr(trigger, "_task_state", state_read_slowly)
    monkeypatch.setattr(trigger, "_owner", owner)

    async def stop_as_the_triggerer_does() -> None:
        async def drain() -> None:
            async for _ in trigger.run():
                raise AssertionError("the trigger fired although its job is still running")

        task = asyncio.ensure_future(drain())
        await asyncio.sleep(0.5)
        task.cancel("user action")  # the first sync after the user's action
        await asyncio.sleep(0.3)
        task.cancel("user action")  # the next sync, while the decision still reads the state
        with pytest.raises(asyncio.CancelledError):
            await task
        if calls_on_kill:
            await asyncio.wait_for(trigger.on_kill(), 30)
        else:  # Airflow 3.1/3.2: no on_kill; the loop goes on running other triggers
            await asyncio.sleep(2.0)

    asyncio.run(stop_as_the_triggerer_does())

    assert_canceled_and_gone(job_id, script)
    assert log.count(f"Canceled job {job_id} because the task is failed: its try 1 is over") == 1, log.text()
