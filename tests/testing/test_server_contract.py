"""The script-runner HTTP contract (``script-runner-api.md``), checked over real loopback HTTP.

Runs against the bundled server, or against a real deployment when ``SCRIPTRUNNER_URL`` is set (see
``conftest.py``). The scripts used are described in ``contract_scripts.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from datetime import datetime
from urllib.parse import quote

import pytest
import requests

from airflow_provider_scriptrunner.testing.harness import (
    ScriptRunnerServerProcess,
    process_alive,
    process_group_alive,
)
from tests.testing.conftest import CONTRACT_SCRIPTS, LIMITED_RUNNER

JOB_FIELDS = {
    "jobId",
    "scriptId",
    "mode",
    "status",
    "code",
    "createdAt",
    "startedAt",
    "endedAt",
    "durationMs",
    "stdoutSize",
    "stderrSize",
    "stdoutTruncated",
    "stderrTruncated",
    "stdoutPreview",
    "stderrPreview",
    "stdoutRef",
    "stderrRef",
}
ISO_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JOB_ID = re.compile(r"^job_\d+_\d+$")
LINE = 12  # bytes per line written by big-output.sh


def assert_error(response: requests.Response, status: int, code: str, message: str | None = None) -> str:
    """Check an error answer, and its message word for word when given; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False
    assert body["error"]["code"] == code
    if message is not None:
        assert body["error"]["message"] == message
    return body["error"]["message"]


def big_output(lines: int) -> str:
    """What ``big-output.sh`` writes for ``lines`` lines."""
    return "".join(f"line {i:06d}\n" for i in range(1, lines + 1))


def iso(value: str) -> datetime:
    assert ISO_UTC_MS.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def wait_gone(pgid: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while process_group_alive(pgid):
        assert time.monotonic() < deadline, f"process group {pgid} still alive"
        time.sleep(0.02)


# ---- health and /run ----------------------------------------------------------------------------


def test_healthz(api):
    response = api.request("GET", "/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_sync_run_answers_200_with_the_full_job_object(api):
    response = api.run("hello")

    assert response.status_code == 200
    job = response.json()
    assert set(job) == JOB_FIELDS | {"ok"}  # in particular no "stdout"/"stderr" with the full output
    assert job["ok"] is True
    assert JOB_ID.match(job["jobId"])
    assert (job["scriptId"], job["mode"], job["status"], job["code"]) == ("hello", "sync", "succeeded", 0)
    assert (job["stdoutPreview"], job["stderrPreview"]) == ("hello stdout\n", "hello stderr\n")
    assert (job["stdoutSize"], job["stderrSize"]) == (13, 13)
    assert job["stdoutTruncated"] is job["stderrTruncated"] is False
    created, started, ended = iso(job["createdAt"]), iso(job["startedAt"]), iso(job["endedAt"])
    assert created <= started <= ended
    assert isinstance(job["durationMs"], int) and job["durationMs"] >= 0
    assert isinstance(job["stdoutRef"], str) and isinstance(job["stderrRef"], str)


def test_async_run_answers_202_with_the_job_id_then_runs(api):
    response = api.run("hello-async")

    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"ok", "jobId", "status"}
    assert body["ok"] is True and body["status"] in ("queued", "running")
    job = api.wait_terminal(body["jobId"])
    assert (job["status"], job["code"], job["mode"]) == ("succeeded", 0, "async")
    assert job["stdoutPreview"] == "hello stdout\n"


def test_request_mode_overrides_the_script_mode(api):
    as_sync = api.run("hello-async", mode="sync")
    as_async = api.run("hello", mode="async")

    assert as_sync.status_code == 200 and as_sync.json()["mode"] == "sync"
    assert as_sync.json()["status"] == "succeeded"
    assert as_async.status_code == 202
    assert api.wait_terminal(as_async.json()["jobId"])["mode"] == "async"


def test_nonzero_exit_fails_with_that_code(api):
    job = api.run("exit-code", ["3"]).json()

    assert (job["status"], job["code"]) == ("failed", 3)
    assert job["stderrPreview"] == "exiting with 3\n"


def test_script_killed_by_a_signal_fails_with_code_minus_one(api):
    job = api.run("self-kill").json()

    assert (job["status"], job["code"]) == ("failed", -1)
    assert job["stdoutPreview"] == "about to die\n"


@pytest.mark.parametrize("body", [{"scriptId": "no-such-script"}, {"args": []}], ids=["unknown", "missing"])
def test_unknown_script_is_script_not_found(api, body):
    assert_error(api.request("POST", "/run", json=body), 400, "SCRIPT_NOT_FOUND")


@pytest.mark.parametrize(
    ("script_id", "args", "message"),
    [
        ("echo-args", "not-a-list", "args must be an array of strings"),
        ("echo-args", {"0": "a"}, "args must be an array of strings"),
        ("echo-args", [str(i) for i in range(11)], "too many args: max 10"),  # default args.maxItems
        ("echo-args", ["ok", 7], "arg[1] must be string"),
        ("echo-args", ["ok", None], "arg[1] must be string"),
        ("exit-code", ["1", "2"], "too many args: max 1"),  # maxItems 1
        ("exit-code", ["abc"], "arg[0] does not match pattern"),
    ],
    ids=["string", "object", "too-many-default", "int-item", "null-item", "too-many", "pattern"],
)
def test_invalid_args_have_the_real_servers_messages(api, script_id, args, message):
    assert_error(api.run(script_id, args), 400, "INVALID_ARGS", message)


@pytest.mark.parametrize(
    ("script_id", "args", "message"),
    [
        ("echo-args", ["x" * 1025], "arg[0] too long: max 1024"),  # default args.itemMaxLength
        ("exit-code", ["1234"], "arg[0] too long: max 3"),  # itemMaxLength 3
    ],
    ids=["too-long-default", "too-long"],
)
def test_too_long_args_name_the_item(api, script_id, args, message):
    # The contract does not quote this message: only its item name is checked against a real server.
    actual = assert_error(api.run(script_id, args), 400, "INVALID_ARGS")
    assert actual == message if api.bundled else actual.startswith("arg[0]")


def test_args_at_the_default_limits_are_accepted(api):
    args = [f"{i}" * 1024 for i in range(10)]

    job = api.run("echo-args", args).json()

    assert job["status"] == "succeeded"
    assert job["stdoutSize"] == 10 * (1024 + 3)


def test_omitted_args_mean_no_args(api):
    job = api.run("echo-args").json()

    assert (job["status"], job["stdoutSize"]) == ("succeeded", 0)


def test_args_reach_the_script_verbatim(api, tmp_path):
    marker = tmp_path / "injected"
    args = [
        "it's",
        "two words",
        f"$(touch {marker})",
        f"`touch {marker}`; touch {marker}",
        '"double" \\ back\\slash',
        "ünïcødé ✓ €",
        "",
        "*",
        "line\nbreak",
        "-n",
    ]

    job = api.run("echo-args", args).json()

    assert job["status"] == "succeeded"
    page = api.logs(job["jobId"]).json()
    assert page["data"] == "".join(f"<{arg}>\n" for arg in args)
    if api.bundled:
        assert not marker.exists()


def test_body_that_is_not_json_is_an_internal_error(api):
    response = api.request("POST", "/run", data=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(response, 500, "INTERNAL_ERROR", "invalid json body")


def test_a_run_without_any_mode_is_sync_by_default(api, bundled):
    # The bundled contract server's config sets no defaultMode: the real server's default applies.
    response = api.run("hello-default")

    assert response.status_code == 200
    job = response.json()
    assert set(job) == JOB_FIELDS | {"ok"}
    assert (job["mode"], job["status"], job["code"]) == ("sync", "succeeded", 0)
    assert (job["stdoutPreview"], job["stderrPreview"]) == ("hello stdout\n", "hello stderr\n")


def test_body_over_2_mib_is_refused(api):
    body = json.dumps({"scriptId": "echo-args", "args": ["x" * (2 * 1024 * 1024)]}).encode()

    try:
        response = api.request("POST", "/run", data=body, headers={"Content-Type": "application/json"})
    except requests.ConnectionError:
        assert not api.bundled, "the bundled server answers 413"
        return
    assert not response.ok
    if api.bundled:
        assert_error(response, 413, "INTERNAL_ERROR")
    # The server still works afterwards.
    assert api.request("GET", "/healthz").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (b"", 400, "SCRIPT_NOT_FOUND", None),
        (b"[1, 2]", 400, "SCRIPT_NOT_FOUND", None),
        (b'{"scriptId": "hello", "args": null}', 200, None, None),
        (b'{"scriptId": "hello", "mode": "later"}', 400, "INVALID_ARGS", "mode must be sync or async"),
        (
            b'{"scriptId": "echo-args", "args": ["a\\u0000b"]}',
            400,
            "INVALID_ARGS",
            "arg[0] must not contain NUL",
        ),
    ],
    ids=["empty", "not-an-object", "null-args", "bad-mode", "nul-in-arg"],
)
def test_bundled_server_answers_where_the_contract_is_silent(api, bundled, body, status, code, message):
    response = api.request("POST", "/run", data=body, headers={"Content-Type": "application/json"})

    if code is None:
        assert response.status_code == status and response.json()["status"] == "succeeded"
    else:
        assert_error(response, status, code, message)


def test_bundled_server_accepts_a_chunked_body(api, bundled):
    chunks = iter([b'{"scriptId": ', b'"echo-args", "args": ["chunked"]}'])  # requests sends it chunked

    response = api.request("POST", "/run", data=chunks, headers={"Content-Type": "application/json"})

    assert response.status_code == 200
    assert response.json()["stdoutPreview"] == "<chunked>\n"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/run"),
        ("POST", "/healthz"),
        ("DELETE", "/jobs/job_1_1"),
        ("POST", "/jobs/job_1_1"),
        ("GET", "/jobs/job_1_1/cancel"),
        ("GET", "/jobs/job_1_1/unknown"),
        ("GET", "/jobs"),
    ],
)
def test_unknown_route_is_not_found(api, method, path):
    assert_error(api.request(method, path), 404, "NOT_FOUND", f"route not found: {method} {path}")


def test_unknown_script_and_job_messages_name_them(api, bundled):
    # Not quoted by the contract: the bundled server's own wording, kept in the same style.
    assert_error(api.run("no-such-script"), 400, "SCRIPT_NOT_FOUND", "script not found: no-such-script")
    assert_error(api.request("GET", "/jobs/job_0_0"), 404, "JOB_NOT_FOUND", "job not found: job_0_0")


# ---- /jobs/{id} ---------------------------------------------------------------------------------


def test_get_job_returns_the_job_object(api):
    finished = api.run("hello").json()

    job = api.job(finished["jobId"])

    assert job == finished


def test_job_id_is_a_percent_decoded_path_segment(api):
    job_id = api.run("hello").json()["jobId"]
    fully_encoded = "".join(f"%{byte:02X}" for byte in job_id.encode())

    response = api.request("GET", f"/jobs/{fully_encoded}")

    assert response.status_code == 200
    assert response.json()["jobId"] == job_id


def test_unknown_job_is_job_not_found(api):
    assert_error(api.request("GET", "/jobs/job_0_0"), 404, "JOB_NOT_FOUND")
    assert_error(api.request("GET", f"/jobs/{quote('no such/job', safe='')}"), 404, "JOB_NOT_FOUND")


# ---- /jobs/{id}/logs ----------------------------------------------------------------------------


def test_logs_page_by_bytes_and_replace_split_characters(api):
    job_id = api.run("utf8").json()["jobId"]  # "café €uro\n": c a f C3A9 space E282AC u r o \n

    whole = api.logs(job_id, stream="stdout").json()
    first = api.logs(job_id, stream="stdout", offset=0, limit=4).json()  # ends inside "é"
    second = api.logs(job_id, stream="stdout", offset=first["nextOffset"], limit=4).json()
    middle = api.logs(job_id, offset=7, limit=2).json()  # inside "€" on both ends

    assert whole == {
        "ok": True,
        "jobId": job_id,
        "stream": "stdout",
        "offset": 0,
        "nextOffset": 13,
        "totalSize": 13,
        "truncated": False,
        "data": "café €uro\n",
    }
    assert (first["offset"], first["nextOffset"], first["totalSize"]) == (0, 4, 13)
    assert first["data"].startswith("caf") and first["data"][3:] and set(first["data"][3:]) == {"\ufffd"}
    assert (second["offset"], second["nextOffset"]) == (4, 8)
    assert second["data"].startswith("\ufffd") and " " in second["data"]
    assert "\ufffd" in middle["data"] and middle["nextOffset"] == 9


def test_logs_at_or_past_the_end_are_empty(api):
    job_id = api.run("utf8").json()["jobId"]

    at_end = api.logs(job_id, offset=13).json()
    past_end = api.logs(job_id, offset=1000).json()
    empty_stream = api.logs(job_id, stream="stderr").json()

    assert (at_end["data"], at_end["nextOffset"], at_end["totalSize"]) == ("", 13, 13)
    assert (past_end["data"], past_end["nextOffset"], past_end["totalSize"]) == ("", 1000, 13)
    assert (empty_stream["data"], empty_stream["nextOffset"], empty_stream["totalSize"]) == ("", 0, 0)


def test_logs_limit_defaults_to_64_kib_and_is_capped_at_1_mib(api):
    lines = 100_000  # 1.2 MB of stdout
    job = api.run("big-output", [str(lines), "0"]).json()
    assert job["status"] == "succeeded"

    default_page = api.logs(job["jobId"]).json()
    huge_page = api.logs(job["jobId"], limit=10_000_000).json()

    assert default_page["nextOffset"] == 65536
    assert len(default_page["data"].encode()) == 65536
    assert default_page["data"].startswith("line 000001\n")
    if huge_page["totalSize"] <= 1048576:
        pytest.skip("the server keeps at most 1 MiB per stream: the cap cannot be told apart")
    assert huge_page["nextOffset"] == 1048576


def test_logs_of_an_unknown_stream_are_invalid_args(api):
    job_id = api.run("hello").json()["jobId"]

    message = assert_error(api.logs(job_id, stream="stdin"), 400, "INVALID_ARGS")
    if api.bundled:
        assert message == "stream must be stdout or stderr"


@pytest.mark.parametrize(
    "params", [{"offset": "-1"}, {"offset": "1.5"}, {"offset": "abc"}, {"limit": "-5"}, {"limit": "ten"}]
)
def test_logs_reject_bad_offset_or_limit(api, bundled, params):
    job_id = api.run("hello").json()["jobId"]

    (name,) = params
    assert_error(api.logs(job_id, **params), 400, "INVALID_ARGS", f"{name} must be a non-negative integer")


def test_logs_of_an_unknown_job_are_job_not_found(api):
    assert_error(api.logs("job_0_0"), 404, "JOB_NOT_FOUND")


# ---- a running job, cancel ----------------------------------------------------------------------


def test_running_job_logs_previews_and_cancel(api):
    job_id = api.start("sleeper")
    pid = api.wait_pid(job_id)
    pgid = os.getpgid(pid) if api.bundled else None

    running = api.wait_for(job_id, lambda job: job["stderrSize"] > 0, what="stderr written")
    assert running["status"] == "running"
    assert (running["code"], running["endedAt"], running["durationMs"]) == (None, None, None)
    assert running["stdoutSize"] == len(f"pid={pid}\n")  # sizes are live while it runs...
    assert running["stdoutPreview"] == running["stderrPreview"] == ""  # ...previews are not

    response = api.cancel(job_id)

    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert response.json()["status"] == "running"  # SIGTERM sent, not yet exited
    job = api.wait_terminal(job_id, timeout=5)
    assert (job["status"], job["code"]) == ("canceled", -1)
    assert (job["stdoutPreview"], job["stderrPreview"]) == (f"pid={pid}\n", "sleeping\n")
    assert job["endedAt"] is not None and job["durationMs"] < 10_000
    if pgid is not None:
        assert not process_alive(pid)
        wait_gone(pgid)


def test_cancel_of_a_finished_job_changes_nothing(api):
    finished = api.run("exit-code", ["4"]).json()

    response = api.cancel(finished["jobId"])

    assert response.status_code == 200
    assert response.json() == finished
    assert api.job(finished["jobId"]) == finished


def test_cancel_of_an_unknown_job_is_job_not_found(api):
    assert_error(api.cancel("job_0_0"), 404, "JOB_NOT_FOUND")


def test_cancel_sends_sigterm_only_so_a_script_ignoring_it_keeps_running(api, bundled):
    # The contract server sets no runner.killGraceSec: like the real server, nothing follows the SIGTERM.
    job_id = api.start("term-ignorer")
    pid = api.wait_pid(job_id)
    pgid = os.getpgid(pid)
    try:
        assert api.cancel(job_id).json()["status"] == "running"
        # Longer than the 5 s after which this server used to send SIGKILL by default.
        watched_until = time.monotonic() + 6
        while time.monotonic() < watched_until:
            job = api.job(job_id)
            assert (job["status"], job["code"], job["endedAt"]) == ("running", None, None)
            assert process_alive(pid)
            time.sleep(0.25)
        assert api.cancel(job_id).json()["status"] == "running"  # a second cancel changes nothing either
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # the test's own cleanup: the server will not do it
    wait_gone(pgid)
    job = api.wait_terminal(job_id)
    assert (job["status"], job["code"]) == ("canceled", -1)


def test_timeout_ends_the_job_as_timed_out(api):
    job_id = api.start("times-out")  # timeoutSec 1, sleeps 30 s
    pid = api.wait_pid(job_id)
    pgid = os.getpgid(pid) if api.bundled else None

    job = api.wait_terminal(job_id, timeout=8)

    assert (job["status"], job["code"]) == ("timed_out", -1)
    assert 900 <= job["durationMs"] < 8000
    assert job["stdoutPreview"] == f"pid={pid}\n"
    if pgid is not None:
        wait_gone(pgid)


# ---- behaviour that needs a particular server configuration (bundled "limited" server) ----------


def test_max_concurrent_queues_jobs_in_fifo_order(limited_api):
    blocker = limited_api.start("sleeper")
    limited_api.wait_for(blocker, lambda job: job["status"] == "running")
    second = limited_api.run("hello-async")
    third = limited_api.run("hello-async")

    assert second.status_code == third.status_code == 202
    assert second.json()["status"] == third.json()["status"] == "queued"
    waiting = limited_api.job(second.json()["jobId"])
    assert (waiting["status"], waiting["startedAt"], waiting["code"]) == ("queued", None, None)

    limited_api.cancel(blocker)
    first_done = limited_api.wait_terminal(blocker)
    second_done = limited_api.wait_terminal(second.json()["jobId"])
    third_done = limited_api.wait_terminal(third.json()["jobId"])

    assert second_done["status"] == third_done["status"] == "succeeded"
    # One at a time, in submission order.
    assert iso(first_done["endedAt"]) <= iso(second_done["startedAt"])
    assert iso(second_done["endedAt"]) <= iso(third_done["startedAt"])


def test_cancel_of_a_queued_job_is_immediate(limited_api):
    blocker = limited_api.start("sleeper")
    limited_api.wait_for(blocker, lambda job: job["status"] == "running")
    queued = limited_api.start("sleeper")

    response = limited_api.cancel(queued)

    assert response.status_code == 200
    job = response.json()
    assert (job["status"], job["code"], job["startedAt"]) == ("canceled", -1, None)
    assert job["endedAt"] is not None
    limited_api.cancel(blocker)
    limited_api.wait_terminal(blocker)
    time.sleep(0.1)  # a slot is free now: a wrongly re-queued job would start here
    assert limited_api.job(queued) == job


@pytest.mark.parametrize(("lines", "truncated"), [(100, False), (101, True), (1000, True)])
def test_output_beyond_max_log_bytes_is_dropped_and_flagged(limited_api, lines, truncated):
    limit = LIMITED_RUNNER["maxLogBytesPerStream"]  # 1200 bytes = 100 lines

    job = limited_api.run("big-output", [str(lines), "10"]).json()

    assert job["status"] == "succeeded"
    assert job["stdoutSize"] == min(lines * LINE, limit)
    assert job["stdoutTruncated"] is truncated
    assert (job["stderrSize"], job["stderrTruncated"]) == (10 * LINE, False)
    page = limited_api.logs(job["jobId"]).json()
    assert (page["totalSize"], page["truncated"]) == (job["stdoutSize"], truncated)
    assert page["data"].endswith(f"line {min(lines, 100):06d}\n")  # the head is kept, the rest dropped


def test_preview_is_the_last_preview_max_bytes_of_the_output(limited_api):
    job = limited_api.run("big-output", ["50", "3"]).json()

    stored = limited_api.logs(job["jobId"]).json()["data"]
    assert stored == big_output(50)
    assert job["stdoutPreview"] == stored[-LIMITED_RUNNER["previewMaxBytes"] :]
    assert job["stderrPreview"] == "line 000001\nline 000002\nline 000003\n"  # shorter than the limit


def test_preview_is_the_end_of_all_output_also_past_the_stored_limit(limited_api):
    preview = LIMITED_RUNNER["previewMaxBytes"]
    out_lines, err_lines = 10_000, 500  # 120 kB of stdout (several pipe reads), 6 kB of stderr

    job = limited_api.run("big-output", [str(out_lines), str(err_lines)]).json()

    assert job["status"] == "succeeded"
    assert job["stdoutTruncated"] is job["stderrTruncated"] is True
    assert job["stdoutSize"] == job["stderrSize"] == LIMITED_RUNNER["maxLogBytesPerStream"]
    assert job["stdoutPreview"] == big_output(out_lines)[-preview:]  # ends "line 010000\n"...
    assert job["stderrPreview"] == big_output(err_lines)[-preview:]
    stored = limited_api.logs(job["jobId"]).json()["data"]
    assert stored.endswith("line 000100\n")  # ...while the stored log stops at the limit


@pytest.mark.parametrize("filler", [0, 2000], ids=["within-the-stored-limit", "past-the-stored-limit"])
def test_preview_cut_inside_a_character_starts_with_a_replacement_character(limited_api, filler):
    preview = LIMITED_RUNNER["previewMaxBytes"]
    tail = preview - 2  # the preview starts with the last byte of the 3-byte "€"

    job = limited_api.run("multibyte-tail", [str(filler), str(tail)]).json()

    assert job["status"] == "succeeded"
    assert job["stdoutTruncated"] is (filler > LIMITED_RUNNER["maxLogBytesPerStream"])
    assert job["stdoutPreview"] == "\ufffd" + "a" * tail + "\n"


def test_default_mode_applies_when_neither_request_nor_script_sets_one(limited_api):
    response = limited_api.run("hello-default")  # limited server: defaultMode "async"

    assert response.status_code == 202
    assert limited_api.wait_terminal(response.json()["jobId"])["mode"] == "async"


def test_sigterm_ignored_is_followed_by_sigkill_after_kill_grace_sec(limited_api):
    grace = LIMITED_RUNNER["killGraceSec"]
    job_id = limited_api.start("term-ignorer")
    pid = limited_api.wait_pid(job_id)
    pgid = os.getpgid(pid)

    assert limited_api.cancel(job_id).json()["status"] == "running"
    time.sleep(grace * 0.3)  # well inside killGraceSec: SIGTERM alone must not have stopped it
    assert limited_api.job(job_id)["status"] == "running"
    assert process_alive(pid)

    job = limited_api.wait_terminal(job_id, timeout=grace + 2)  # after killGraceSec, not some default
    assert (job["status"], job["code"]) == ("canceled", -1)
    wait_gone(pgid)


# ---- restart (bundled server in its own directory) ----------------------------------------------


@pytest.mark.parametrize("crash", [False, True], ids=["graceful", "crash"])
def test_restart_fails_unfinished_jobs_and_keeps_finished_ones(bundled, tmp_path, make_api, crash):
    config = {
        "runner": {"maxConcurrent": 1, "jobStoreFile": "state/jobs.json", "logsDir": "state/logs"},
        "scriptsFile": str(CONTRACT_SCRIPTS),
    }
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")

    with ScriptRunnerServerProcess(tmp_path, config_path=config_path) as server:
        api = make_api(server.url)
        finished = api.run("hello").json()
        running = api.start("sleeper")
        pid = api.wait_pid(running)
        queued = api.start("hello-async")
        assert api.job(queued)["status"] == "queued"
        port = server.port

        server.restart(kill=crash)

        assert server.port == port
        assert api.job(finished["jobId"]) == finished
        assert api.logs(finished["jobId"], stream="stderr").json()["data"] == "hello stderr\n"
        lost = api.job(running)
        assert (lost["status"], lost["code"]) == ("failed", -1)
        assert lost["endedAt"] is not None and lost["startedAt"] is not None
        assert api.logs(running).json()["data"] == f"pid={pid}\n"  # what it wrote before is kept
        never_ran = api.job(queued)
        assert (never_ran["status"], never_ran["code"], never_ran["startedAt"]) == ("failed", -1, None)
        # A crash leaves the script running, detached; a graceful stop of the bundled server ends it.
        assert process_alive(pid) is crash

        new = api.run("hello").json()
        assert new["jobId"].endswith("_1")  # numbering restarts...
        assert new["jobId"] not in (finished["jobId"], running, queued)  # ...ids stay distinct
    assert not process_alive(pid)


def test_a_lone_surrogate_argument_is_invalid_args(api, bundled):
    # JSON can spell a lone surrogate ("\ud800"), which no process argument can carry.
    response = api.request(
        "POST",
        "/run",
        data=b'{"scriptId": "echo-args", "args": ["ok", "\\ud800"], "mode": "sync"}',
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400, "INVALID_ARGS", "arg[1] must be valid unicode")
