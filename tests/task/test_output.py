"""The job's output in the task log and the return value: lines, the kept end, priming, truncation."""

from __future__ import annotations

import pytest

from airflow_provider_scriptrunner.client.models import ScriptRunnerJob
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook
from airflow_provider_scriptrunner.task.output import (
    TRUNCATION_MARKER,
    LineWriter,
    StreamFollower,
    TailBuffer,
)
from tests.conftest import BASE_URL, job_body, log_page_callback, mixed_text

JOB = "job_5_1"


class ListLog:
    """A logger that keeps what it was given: (level, formatted message)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def _add(self, level, message, *args):
        self.records.append((level, message % args if args else message))

    def info(self, message, *args):
        self._add("info", message, *args)

    def warning(self, message, *args):
        self._add("warning", message, *args)

    @property
    def lines(self) -> list[str]:
        return [m for level, m in self.records if level == "info" and m.startswith("[")]

    def text(self, level: str) -> str:
        return "\n".join(m for lv, m in self.records if lv == level)


def serve(requests_mock, stdout: bytes, stderr: bytes = b"", truncated: bool = False) -> None:
    requests_mock.get(
        f"{BASE_URL}/jobs/{JOB}/logs", json=log_page_callback({"stdout": stdout, "stderr": stderr}, truncated)
    )


def finished(**fields) -> ScriptRunnerJob:
    return ScriptRunnerJob.from_api(job_body(JOB, "succeeded", **fields))


def keeping(cap: int, page: int, log, offset: int = 0, **kwargs) -> StreamFollower:
    """A stdout follower that keeps the last ``cap`` bytes for the return value."""
    return StreamFollower("stdout", log, page, offset, tail=TailBuffer(cap), **kwargs)


# -- LineWriter ----------------------------------------------------------------------------------


def test_lines_are_written_whole_across_writes():
    log = ListLog()
    writer = LineWriter("stdout", log, max_partial=100)
    writer.write("one\ntw")
    assert log.lines == ["[stdout] one"]
    writer.write("o\nthr")
    writer.write("ee")
    assert log.lines == ["[stdout] one", "[stdout] two"]
    writer.flush()
    assert log.lines == ["[stdout] one", "[stdout] two", "[stdout] three"]


def test_pending_bytes_count_the_held_line_in_utf8():
    writer = LineWriter("stderr", ListLog(), max_partial=100)
    writer.write("done\nhalf é中")
    assert writer.pending_bytes == len("half é中".encode())
    writer.write("\n")
    assert writer.pending_bytes == 0


def test_a_line_longer_than_a_page_is_written_in_pieces():
    log = ListLog()
    writer = LineWriter("stdout", log, max_partial=8)
    writer.write("x" * 20)
    assert log.lines == ["[stdout] " + "x" * 20]  # bounded: not held past max_partial
    assert writer.pending_bytes == 0


def test_empty_lines_are_kept():
    log = ListLog()
    LineWriter("stdout", log, 10).write("a\n\nb\n")
    assert log.lines == ["[stdout] a", "[stdout] ", "[stdout] b"]


# -- StreamFollower: priming after a trigger ------------------------------------------------------


def full_read(requests_mock, blob: bytes, cap: int, page: int) -> tuple[str, bool]:
    follower = keeping(cap, page, ListLog())
    follower.pump(ScriptRunnerHook(), JOB, complete=True)
    follower.finish(finished(stdoutSize=len(blob)))
    return follower.result()


@pytest.mark.parametrize("cap", [0, 1, 5, 64, 1000, 5000, 2 * 1048576])
def test_prime_then_rest_gives_the_same_result_as_one_read(conn, requests_mock, cap):
    # A trigger logged [0, offset); execute_complete primes the kept end from there and reads on.
    blob = mixed_text(3000)
    serve(requests_mock, blob)
    expected = full_read(requests_mock, blob, cap, page=97)
    text = blob.decode()
    for chars in range(0, len(text) + 1, 37):
        offset = len(text[:chars].encode())  # trigger offsets are character boundaries
        log = ListLog()
        follower = keeping(cap, 97, log, offset)
        follower.prime(ScriptRunnerHook(), JOB)
        assert log.records == []  # priming never logs: the trigger did
        follower.pump(ScriptRunnerHook(), JOB, complete=True)
        follower.finish(finished(stdoutSize=len(blob)))
        assert follower.result() == expected, f"cap={cap} offset={offset}"
        assert (
            "".join(m[len("[stdout] ") :] + "\n" for m in log.lines).rstrip("\n") == text[chars:].rstrip("\n")
            or not text[chars:]
        )


def test_prime_reads_only_the_end_it_needs(conn, requests_mock):
    blob = b"a" * 100_000
    serve(requests_mock, blob)
    follower = keeping(100, 65536, ListLog(), offset=len(blob))
    follower.prime(ScriptRunnerHook(), JOB)
    (request,) = requests_mock.request_history
    assert (request.qs["offset"], request.qs["limit"]) == ([str(len(blob) - 103)], ["103"])
    assert follower.result() == ("a" * 100, True)


# -- StreamFollower: the true end of truncated output ---------------------------------------------


def test_a_truncated_stream_ends_with_its_preview(conn, requests_mock):
    stored = b"line 1\nline 2\nline 3 (cut by the server"
    serve(requests_mock, stored, truncated=True)
    log = ListLog()
    follower = keeping(1000, 65536, log)
    follower.pump(ScriptRunnerHook(), JOB, complete=True)
    job = finished(stdoutSize=len(stored), stdoutTruncated=True, stdoutPreview="\ufffdnd of it\nlast line\n")
    follower.finish(job)

    text, truncated = follower.result()
    assert truncated is True
    assert text == stored.decode() + TRUNCATION_MARKER + "nd of it\nlast line\n"  # cut character dropped
    warnings = log.text("warning")
    assert warnings.count("truncated stdout") == 1 and f"at {len(stored)} bytes" in warnings
    assert log.lines[-2:] == ["[stdout] nd of it", "[stdout] last line"]
    assert "End of stdout past the truncation" in log.text("info")


def test_truncation_already_reported_by_the_trigger_is_not_reported_again(conn, requests_mock):
    serve(requests_mock, b"x\n", truncated=True)
    log = ListLog()
    follower = keeping(100, 64, log, truncation_warned=True)
    follower.pump(ScriptRunnerHook(), JOB, complete=True)
    follower.finish(finished(stdoutSize=2, stdoutTruncated=True, stdoutPreview="tail\n"))
    assert log.text("warning") == ""
    assert log.lines == ["[stdout] x", "[stdout] tail"]


def test_the_end_past_truncation_is_capped_like_the_rest(conn, requests_mock):
    serve(requests_mock, b"s" * 50, truncated=True)
    follower = keeping(10, 64, ListLog())
    follower.pump(ScriptRunnerHook(), JOB, complete=True)
    follower.finish(finished(stdoutSize=50, stdoutTruncated=True, stdoutPreview="0123456789END"))
    assert follower.result() == ("3456789END", True)


def test_no_preview_no_tail(conn, requests_mock):
    serve(requests_mock, b"abc", truncated=True)
    follower = keeping(100, 64, ListLog())
    follower.pump(ScriptRunnerHook(), JOB, complete=True)
    follower.finish(finished(stdoutSize=3, stdoutTruncated=True))
    assert follower.result() == ("abc", True)


def test_an_untruncated_stream_ignores_the_preview(conn, requests_mock):
    serve(requests_mock, b"all of it\n")
    follower = keeping(100, 64, ListLog())
    follower.pump(ScriptRunnerHook(), JOB, complete=True)
    follower.finish(finished(stdoutSize=10, stdoutPreview="all of it\n"))
    assert follower.result() == ("all of it\n", False)


def test_a_follower_without_a_tail_only_logs(conn, requests_mock):
    # The trigger's kind: everything goes to the log, nothing is kept, and there is nothing to prime.
    serve(requests_mock, b"one\ntwo\n")
    log = ListLog()
    follower = StreamFollower("stdout", log, 64, offset=4)
    follower.prime(ScriptRunnerHook(), JOB)
    assert requests_mock.call_count == 0
    follower.pump(ScriptRunnerHook(), JOB, complete=True)
    follower.finish(finished(stdoutSize=8))
    assert log.lines == ["[stdout] two"] and follower.offset == 8


def test_logged_offset_stops_before_a_line_still_being_written(conn, requests_mock):
    # What a trigger reports as its log offset: the next reader starts there and logs the line whole.
    serve(requests_mock, "done\nhalf é".encode())
    log = ListLog()
    follower = StreamFollower("stdout", log, 64)
    follower.pump(ScriptRunnerHook(), JOB, complete=False)
    assert (follower.offset, follower.logged_offset) == (12, 5)
    assert log.lines == ["[stdout] done"]
    follower.finish()
    assert follower.logged_offset == 12 and log.lines == ["[stdout] done", "[stdout] half é"]


def test_catch_up_reads_only_what_a_poll_reports_as_new(conn, requests_mock):
    serve(requests_mock, b"ab\ncd\n")
    hook, log = ScriptRunnerHook(), ListLog()
    follower = keeping(100, 64, log)
    running = ScriptRunnerJob.from_api(job_body(JOB, "running", stdoutSize=0))
    follower.catch_up(hook, running)
    assert requests_mock.call_count == 0  # the job reports no output: nothing to read
    follower.catch_up(hook, ScriptRunnerJob.from_api(job_body(JOB, "running", stdoutSize=3)))
    assert requests_mock.call_count == 1 and log.lines == ["[stdout] ab", "[stdout] cd"]
    follower.catch_up(hook, finished(stdoutSize=6, stdoutPreview="ab\ncd\n"))
    assert requests_mock.call_count == 1  # read to the end already
    assert follower.result() == ("ab\ncd\n", False)


def test_prime_with_a_cap_larger_than_a_page_reads_from_the_start(conn, requests_mock):
    blob = b"ab\n" * 400_000  # 1.2 MB: the kept end cannot come in one page ending at the offset
    serve(requests_mock, blob)
    follower = keeping(2 * 1048576, 1048576, ListLog(), offset=len(blob))
    follower.prime(ScriptRunnerHook(), JOB)
    assert requests_mock.request_history[0].qs["offset"] == ["0"]
    assert follower.result() == (blob.decode(), False)


# -- StreamFollower: a finished job's preview instead of a log read --------------------------------


@pytest.mark.parametrize("cap", [0, 5, 1000, 5000])
def test_a_preview_that_is_all_of_the_output_replaces_the_log_read(conn, requests_mock, cap):
    blob = mixed_text(3000)
    text = blob.decode()
    serve(requests_mock, blob)
    expected = full_read(requests_mock, blob, cap, page=97)
    job = finished(stdoutSize=len(blob), stdoutPreview=text)
    for chars in range(0, len(text), 101):
        offset = len(text[:chars].encode())  # what a worker or trigger logged already: a character boundary
        requests_mock.reset_mock()
        log = ListLog()
        follower = keeping(cap, 97, log, offset)
        follower.prime(ScriptRunnerHook(), JOB)
        primed = len(requests_mock.request_history)
        assert follower.take_preview(job) is True
        follower.finish(job)
        assert len(requests_mock.request_history) == primed  # nothing read past the priming
        assert follower.result() == expected, f"cap={cap} offset={offset}"
        assert follower.offset == len(blob)
        assert "".join(m[len("[stdout] ") :] + "\n" for m in log.lines).rstrip("\n") == text[chars:].rstrip(
            "\n"
        )


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"stdoutSize": 5000, "stdoutPreview": "x" * 4096}, "the preview is only the end of it"),
        ({"stdoutSize": 4098, "stdoutPreview": "\ufffd" + "x" * 4095}, "a character cut at its start"),
        ({"stdoutSize": 3, "stdoutPreview": "a\ufffd"}, "invalid bytes: the decoding lost some"),
        ({"stdoutSize": 3, "stdoutPreview": "abc", "stdoutTruncated": True}, "the server truncated it"),
        ({"stdoutSize": 3, "stdoutPreview": ""}, "no preview"),
    ],
)
def test_a_preview_that_may_not_be_all_of_it_is_not_used(fields, why):
    follower = keeping(100, 64, ListLog())
    assert follower.take_preview(finished(**fields)) is False, why
    assert (follower.offset, follower.result()) == (0, ("", False))


def test_a_running_job_has_no_usable_preview():
    running = ScriptRunnerJob.from_api(job_body(JOB, "running", stdoutSize=3, stdoutPreview="abc"))
    assert keeping(100, 64, ListLog()).take_preview(running) is False


@pytest.mark.parametrize("cap", [1, 2, 3, 5, 64, 999, 2999, 3000, 3001])
@pytest.mark.parametrize("page", [4, 7, 100, 5000])
def test_the_kept_end_is_the_last_cap_bytes_of_the_output(conn, requests_mock, cap, page):
    blob = mixed_text(3000)
    serve(requests_mock, blob)
    follower = keeping(cap, page, ListLog())
    follower.pump(ScriptRunnerHook(), JOB, complete=True)
    follower.finish(finished(stdoutSize=len(blob)))
    cut = len(blob) > cap
    # The last ``cap`` bytes, less the end of a character the cap cut at the front.
    expected = blob[-cap:].decode("utf-8", errors="ignore") if cut else blob.decode()
    assert follower.result() == (expected, cut)
