"""ScriptRunnerJobTrigger while the job runs: live output into the log, offsets in the event, idle_timeout."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest

from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerAsyncHook
from airflow_provider_scriptrunner.task.limits import Deadline
from airflow_provider_scriptrunner.task.outcome import JobEvent
from airflow_provider_scriptrunner.triggers.scriptrunner import ScriptRunnerJobTrigger
from tests.conftest import job_body, log_page, mixed_text
from tests.triggers.test_scriptrunner_trigger import only_event

JOB = "job_1795342284509_3"


class GrowingJob:
    """
    script-runner for one job whose output grows poll by poll.

    ``steps`` is a list of ``(status, stdout, stderr)``: each GET /jobs answers the next step (the
    last one repeats), and the logs endpoint pages the output of the step last answered.
    """

    def __init__(self, steps, truncated=(), cancel_status="running", **job_fields):
        self.steps = list(steps)
        self.truncated = set(truncated)
        self.job_fields = job_fields
        self.cancel_status = cancel_status
        self.current = {"stdout": b"", "stderr": b""}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "POST":
            return httpx.Response(200, json=job_body(JOB, self.cancel_status))
        if path.endswith("/logs"):
            query = parse_qs(request.url.query.decode())
            stream = query["stream"][0]
            body = log_page(
                self.current,
                stream,
                int(query["offset"][0]),
                int(query["limit"][0]),
                JOB,
                stream in self.truncated,
            )
            return httpx.Response(200, json=body)
        status, stdout, stderr = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        self.current = {"stdout": stdout, "stderr": stderr}
        fields = {
            "stdoutSize": len(stdout),
            "stderrSize": len(stderr),
            "stdoutTruncated": "stdout" in self.truncated,
            "stderrTruncated": "stderr" in self.truncated,
            **(self.job_fields if status != "running" else {}),
        }
        return httpx.Response(200, json=job_body(JOB, status, **fields))

    def logs_requests(self, stream=None):
        return [
            r
            for r in self.requests
            if r.url.path.endswith("/logs") and (stream is None or f"stream={stream}" in str(r.url))
        ]

    @property
    def cancels(self):
        return [r for r in self.requests if r.method == "POST"]


def make(server: GrowingJob, **kwargs) -> ScriptRunnerJobTrigger:
    kwargs.setdefault("poll_interval", 5.0)
    kwargs.setdefault("stream_logs", True)
    trigger = ScriptRunnerJobTrigger(job_id=JOB, **kwargs)
    trigger._hook = ScriptRunnerAsyncHook(retries=0, transport=httpx.MockTransport(server))
    return trigger


def lines_of(data: bytes) -> list[str]:
    lines = data.decode().split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def logged(task_log, stream="stdout") -> list[str]:
    prefix = f"info: [{stream}] "
    return [line[len(prefix) :] for line in task_log.text.splitlines() if line.startswith(prefix)]


@pytest.mark.asyncio
async def test_output_is_logged_line_by_line_while_the_job_runs(conn, clock, task_log):
    server = GrowingJob(
        [
            ("running", b"first line\nsecond ", b""),
            ("running", b"first line\nsecond half\n", b"warn: x\n"),
            ("succeeded", b"first line\nsecond half\nlast, no newline", b"warn: x\n"),
        ]
    )
    payload = await only_event(make(server))

    assert logged(task_log) == ["first line", "second half", "last, no newline"]
    assert logged(task_log, "stderr") == ["warn: x"]
    # Each byte is fetched once: every request starts where the previous one of its stream ended.
    offsets = [int(parse_qs(r.url.query.decode())["offset"][0]) for r in server.logs_requests("stdout")]
    assert offsets == [0, len(b"first line\nsecond "), len(b"first line\nsecond half\n")]
    assert payload["log_offsets"] == {
        "stdout": len(b"first line\nsecond half\nlast, no newline"),
        "stderr": 8,
    }


@pytest.mark.asyncio
async def test_lines_are_never_logged_twice_and_the_held_line_is_not_counted(conn, clock, task_log):
    # The job ends while the trigger holds a partial line that the final read completes.
    server = GrowingJob(
        [("running", b"a\nhal", b""), ("running", b"a\nhal", b""), ("succeeded", b"a\nhalf\n", b"")]
    )
    payload = await only_event(make(server))
    assert logged(task_log) == ["a", "half"]
    assert payload["log_offsets"]["stdout"] == 7


@pytest.mark.asyncio
async def test_offsets_exclude_a_held_partial_line_when_the_trigger_stops_early(conn, clock, task_log):
    # A timeout event while a partial line is held: the offset is where that line starts, so the
    # worker logs it whole.
    server = GrowingJob([("running", "done\npart é".encode(), b"")])
    payload = await only_event(make(server, deadline=Deadline(clock.now + 7, "timeout", 7).to_dict()))
    assert payload["kind"] == "timeout"
    assert logged(task_log) == ["done"]
    assert payload["log_offsets"] == {"stdout": len(b"done\n"), "stderr": 0}


@pytest.mark.asyncio
@pytest.mark.parametrize("page", [4, 5, 7, 64])
async def test_multibyte_text_cut_by_small_pages_is_logged_exactly(conn, clock, task_log, page):
    blob = mixed_text(700)
    half = blob[: len(blob) // 2]  # may end inside a character while the job runs
    server = GrowingJob([("running", half, b""), ("succeeded", blob, b"")])
    payload = await only_event(make(server, log_page_bytes=page))
    # Byte-exact, whole lines, nothing twice (a line is held whole across pages).
    lines = blob.decode().split("\n")
    assert logged(task_log) == (lines[:-1] if lines[-1] == "" else lines)
    assert "\ufffd" not in task_log.text
    assert all(int(parse_qs(r.url.query.decode())["limit"][0]) <= page for r in server.logs_requests())
    assert payload["log_offsets"]["stdout"] == len(blob)


@pytest.mark.asyncio
async def test_resuming_from_offsets_logs_only_what_is_new(conn, clock, task_log):
    # A re-created trigger (triggerer restart) starts from the offsets it was deferred with.
    server = GrowingJob([("succeeded", b"old 1\nold 2\nnew 3\n", b"e\n")])
    await only_event(make(server, log_offsets={"stdout": len(b"old 1\nold 2\n"), "stderr": 2}))
    assert logged(task_log) == ["new 3"] and logged(task_log, "stderr") == []


@pytest.mark.asyncio
async def test_no_log_requests_while_nothing_new_was_written(conn, clock):
    server = GrowingJob(
        [
            ("running", b"x\n", b""),
            ("running", b"x\n", b""),
            ("running", b"x\n", b""),
            ("succeeded", b"x\n", b""),
        ]
    )
    await only_event(make(server))
    assert len(server.logs_requests("stdout")) == 1  # sizes unchanged: no request
    assert server.logs_requests("stderr") == []


@pytest.mark.asyncio
async def test_a_finished_jobs_rest_comes_from_its_preview_when_that_is_all_of_it(conn, clock, task_log):
    server = GrowingJob(
        [("running", "one é\n".encode(), b""), ("succeeded", "one é\ntwo €\nthree".encode(), b"")],
        stdoutPreview="one é\ntwo €\nthree",
    )
    payload = await only_event(make(server))

    assert logged(task_log) == ["one é", "two €", "three"]
    offsets = [int(parse_qs(r.url.query.decode())["offset"][0]) for r in server.logs_requests("stdout")]
    assert offsets == [0]  # the rest came from the preview: no request once the job had ended
    assert payload["log_offsets"]["stdout"] == len("one é\ntwo €\nthree".encode())


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("output", "preview"),
    [
        (b"a\nb\nc\n", "c\n"),  # the preview is only the end
        ("€ and more\n".encode(), "\ufffd\ufffd and more\n"),  # the preview starts inside a character
    ],
    ids=["end-only", "cut-character"],
)
async def test_a_preview_that_is_not_all_of_the_output_is_not_used(conn, clock, task_log, output, preview):
    server = GrowingJob([("succeeded", output, b"")], stdoutPreview=preview)
    payload = await only_event(make(server))

    assert logged(task_log) == lines_of(output)
    assert len(server.logs_requests("stdout")) == 1
    assert payload["log_offsets"]["stdout"] == len(output)


@pytest.mark.asyncio
async def test_stream_logs_false_reads_no_logs(conn, clock, task_log):
    server = GrowingJob([("running", b"x\n", b""), ("succeeded", b"x\ny\n", b"")])
    payload = await only_event(make(server, stream_logs=False))
    assert server.logs_requests() == [] and logged(task_log) == []
    assert payload["log_offsets"] == {"stdout": 0, "stderr": 0}  # the worker writes it all


@pytest.mark.asyncio
async def test_a_truncated_stream_is_reported_once(conn, clock, task_log):
    server = GrowingJob(
        [("running", b"kept\n", b""), ("running", b"kept\n", b""), ("succeeded", b"kept\n", b"")],
        truncated={"stdout"},
    )
    payload = await only_event(make(server))
    assert task_log.text.count("truncated stdout") == 1
    assert payload["truncation_warned"] == ["stdout"]
    assert JobEvent.from_dict(payload).truncation_warned == ("stdout",)


# -- idle_timeout --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_stalled_job_is_canceled(conn, clock):
    server = GrowingJob([("queued", b"", b"")] * 3 + [("running", b"hello\n", b"")])
    payload = await only_event(make(server, poll_interval=5, idle={"idle_timeout": 12}))
    assert payload["kind"] == "timeout" and payload["limit"] == "idle_timeout"
    assert payload["message"] == f"job {JOB} was canceled: no output for 12 s (idle_timeout=12 s)"
    assert payload["canceled"] is True and len(server.cancels) == 1
    # Queued polls did not count: running seen at t=15, stalled at t=27 (not 12).
    assert clock.sleeps == [5.0, 5.0, 5.0, 5.0, 5.0, 2.0]


@pytest.mark.asyncio
async def test_a_job_that_keeps_writing_is_not_stalled(conn, clock):
    steps = [("running", b"x" * n, b"") for n in range(1, 9)] + [("succeeded", b"x" * 8, b"")]
    payload = await only_event(
        make(server := GrowingJob(steps), poll_interval=5, idle={"idle_timeout": 6}, stream_logs=False)
    )
    assert payload["kind"] == "ended" and not server.cancels


@pytest.mark.asyncio
async def test_idle_state_from_the_worker_carries_over(conn, clock):
    # The worker saw these sizes 10 s before deferring; nothing grew since: 2 s left.
    server = GrowingJob([("running", b"ab", b"")])
    payload = await only_event(
        make(
            server,
            idle={"idle_timeout": 12, "sizes": [2, 0], "since": clock.now - 10},
            stream_logs=False,
        )
    )
    assert payload["limit"] == "idle_timeout" and clock.sleeps == [2.0]


@pytest.mark.asyncio
async def test_idle_detection_turns_off_for_a_truncated_stream(conn, clock, task_log):
    steps = [("running", b"x", b"")] * 6 + [("succeeded", b"x", b"")]
    payload = await only_event(
        make(
            server := GrowingJob(steps, truncated={"stdout"}),
            poll_interval=5,
            idle={"idle_timeout": 6},
            stream_logs=False,
        )
    )
    assert payload["kind"] == "ended" and not server.cancels  # never a false stall
    assert task_log.text.count("idle_timeout is off") == 1
