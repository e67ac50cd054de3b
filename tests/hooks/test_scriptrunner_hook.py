"""ScriptRunnerHook (requests) against requests-mock: connection, endpoints, errors, retries, logs."""

from __future__ import annotations

import base64
import io
import json
import logging
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3.exceptions

from airflow_provider_scriptrunner.client.errors import (
    ScriptRunnerApiError,
    ScriptRunnerAuthError,
    ScriptRunnerConfigError,
    ScriptRunnerConnectionError,
    ScriptRunnerJobNotFoundError,
    ScriptRunnerResponseError,
    ScriptRunnerTimeoutError,
    ScriptRunnerTLSError,
)
from airflow_provider_scriptrunner.client.models import JobStatus
from airflow_provider_scriptrunner.client.settings import build_base_url
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerHook
from tests.conftest import BASE_URL, TOKEN, job_body, log_page, log_page_callback, mixed_text

REFUSED = requests.exceptions.ConnectionError(
    urllib3.exceptions.MaxRetryError(None, "/run", urllib3.exceptions.NewConnectionError(None, "refused"))
)
RESET_AFTER_SEND = requests.exceptions.ConnectionError(
    urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
)


# -- connection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "schema", "expected"),
    [
        ("localhost", None, None, "http://localhost:8080"),
        ("localhost", 9000, "", "http://localhost:9000"),
        ("sr.internal", None, "https", "https://sr.internal:8080"),
        ("localhost:3000", None, None, "http://localhost:3000"),
        ("https://proxy.example/script-runner/", None, None, "https://proxy.example/script-runner"),
        ("https://proxy.example/prefix", 8443, None, "https://proxy.example:8443/prefix"),
        ("proxy.example", 443, "prefix", "https://proxy.example:443/prefix"),
        ("proxy.example/sr", 80, "http", "http://proxy.example:80/sr"),
        ("::1", 8080, "http", "http://[::1]:8080"),
    ],
)
def test_base_url_from_connection_fields(host, port, schema, expected):
    assert build_base_url(host, port, schema) == expected


@pytest.mark.parametrize("host", [None, "", "   "])
def test_missing_host_is_a_config_error_that_says_what_to_set(host):
    with pytest.raises(ScriptRunnerConfigError, match="no host"):
        build_base_url(host, None, None)


def test_uri_form_with_token_and_prefix(monkeypatch):
    extra = json.dumps({"timeout": 7, "retries": 1, "headers": {"X-Team": "data"}})
    monkeypatch.setenv(
        "AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT",
        f"scriptrunner://:{TOKEN}@proxy.example:443/prefix?__extra__={requests.utils.quote(extra)}",
    )
    settings = ScriptRunnerHook().settings
    assert settings.base_url == "https://proxy.example:443/prefix"
    assert settings.auth_header == f"Bearer {TOKEN}"
    assert settings.timeout == 7
    assert settings.retries == 1
    assert settings.headers == {"X-Team": "data"}


def test_uri_form_plain(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SCRIPTRUNNER_DEFAULT", "scriptrunner://localhost:8080")
    settings = ScriptRunnerHook().settings
    assert settings.base_url == "http://localhost:8080"
    assert settings.auth_header is None


def test_json_form_with_basic_auth_and_extras(set_connection, requests_mock):
    set_connection(
        host="sr.test",
        port=8080,
        login="alice",
        password=TOKEN,
        extra={"timeout": "2.5", "verify_ssl": "false", "headers": '{"X-A": "1"}'},
    )
    hook = ScriptRunnerHook()
    assert hook.settings.timeout == 2.5
    assert hook.settings.verify is False
    requests_mock.get(f"{BASE_URL}/healthz", json={"ok": True})
    hook.health()
    sent = requests_mock.last_request
    assert sent.headers["Authorization"] == "Basic " + base64.b64encode(f"alice:{TOKEN}".encode()).decode()
    assert sent.headers["X-A"] == "1"
    assert sent.verify is False
    assert sent.timeout == 2.5


def test_ui_prefixed_extras_and_ca_bundle(set_connection):
    set_connection(
        host="sr.test", extra={"extra__scriptrunner__timeout": 4, "extra__scriptrunner__ca_bundle": "/ca.pem"}
    )
    settings = ScriptRunnerHook().settings
    assert settings.timeout == 4
    assert settings.verify == "/ca.pem"


def test_token_sent_as_bearer(set_connection, requests_mock):
    set_connection(host="sr.test", port=8080, password=TOKEN)
    requests_mock.get(f"{BASE_URL}/healthz", json={"ok": True})
    ScriptRunnerHook().health()
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_no_auth_by_default(conn, requests_mock):
    requests_mock.get(f"{BASE_URL}/healthz", json={"ok": True})
    ScriptRunnerHook().health()
    assert "Authorization" not in requests_mock.last_request.headers


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"timeout": "soon"}, "'timeout' must be a number"),
        ({"retries": -1}, "'retries' must be >= 0"),
        ({"verify_ssl": "maybe"}, "'verify_ssl' must be true or false"),
        ({"headers": "{not json"}, '"headers" must be a JSON object'),
        ({"headers": "[1]"}, '"headers" must be a JSON object'),
    ],
)
def test_bad_extras_name_the_field(set_connection, extra, message):
    set_connection(host="sr.test", extra=extra)
    with pytest.raises(ScriptRunnerConfigError, match=message):
        _ = ScriptRunnerHook().settings


def test_login_without_password_is_rejected(set_connection):
    set_connection(host="sr.test", login="alice")
    with pytest.raises(ScriptRunnerConfigError, match="login but no password"):
        _ = ScriptRunnerHook().settings


def test_token_never_in_repr_logs_or_errors(set_connection, requests_mock, caplog):
    set_connection(host="sr.test", port=8080, password=TOKEN)
    hook = ScriptRunnerHook(retries=1)
    requests_mock.get(
        f"{BASE_URL}/jobs/j1", [{"status_code": 503, "text": "busy"}, {"status_code": 401, "text": ""}]
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ScriptRunnerAuthError) as info:
        hook.get_job("j1")
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {TOKEN}"
    for text in (repr(hook), repr(hook.settings), str(info.value), repr(info.value), caplog.text):
        assert TOKEN not in text


# -- endpoints --------------------------------------------------------------------------------


def test_run_script_sync_returns_finished_job(conn, requests_mock):
    requests_mock.post(
        f"{BASE_URL}/run", json=job_body("job_9_1", "succeeded", mode="sync", stdoutPreview="hi\n")
    )
    job = ScriptRunnerHook().run_script("quick-echo", ["a", 1, 2.5])
    assert requests_mock.last_request.json() == {
        "scriptId": "quick-echo",
        "args": ["a", "1", "2.5"],
        "mode": "sync",
    }
    assert requests_mock.last_request.timeout == (30.0, None)
    assert job.job_id == "job_9_1"
    assert job.status is JobStatus.SUCCEEDED and job.is_success and job.exit_code == 0
    assert job.stdout_preview == "hi\n"


def test_submit_script_returns_job_id(conn, requests_mock):
    requests_mock.post(
        f"{BASE_URL}/run", status_code=202, json={"ok": True, "jobId": "job_5_2", "status": "queued"}
    )
    assert ScriptRunnerHook().submit_script("quick-echo") == "job_5_2"
    assert requests_mock.last_request.json() == {"scriptId": "quick-echo", "args": [], "mode": "async"}


def test_submit_without_job_id_is_a_malformed_response(conn, requests_mock):
    requests_mock.post(f"{BASE_URL}/run", status_code=202, json={"ok": True})
    with pytest.raises(ScriptRunnerResponseError, match="no jobId") as info:
        ScriptRunnerHook().submit_script("quick-echo")
    assert (info.value.method, info.value.url) == ("POST", f"{BASE_URL}/run")
    assert info.value.status_code == 202


def test_get_job_quotes_the_id(conn, requests_mock):
    requests_mock.get(f"{BASE_URL}/jobs/a%2Fb%20c", json=job_body("a/b c"))
    job = ScriptRunnerHook().get_job("a/b c")
    assert requests_mock.last_request.path == "/jobs/a%2fb%20c"
    assert job.job_id == "a/b c"


def test_cancel_job(conn, requests_mock):
    requests_mock.post(f"{BASE_URL}/jobs/job_1_1/cancel", json=job_body("job_1_1", "running"))
    job = ScriptRunnerHook().cancel_job("job_1_1")
    assert requests_mock.call_count == 1
    assert job.status is JobStatus.RUNNING


def test_get_log_page_sends_byte_offsets(conn, requests_mock):
    requests_mock.get(f"{BASE_URL}/jobs/j/logs", json=log_page_callback({"stderr": b"0123456789"}))
    page = ScriptRunnerHook().get_log_page("j", "stderr", offset=2, limit=3)
    assert requests_mock.last_request.qs == {"stream": ["stderr"], "offset": ["2"], "limit": ["3"]}
    assert (page.data, page.offset, page.next_offset, page.total_size) == ("234", 2, 5, 10)


def test_requests_go_through_one_session(conn, requests_mock):
    requests_mock.get(f"{BASE_URL}/healthz", json={"ok": True})
    hook = ScriptRunnerHook()
    hook.health()
    hook.get_conn().headers["X-Probe"] = "same-session"  # only a request through this session carries it
    hook.health()
    first, second = requests_mock.request_history
    assert "X-Probe" not in first.headers and second.headers["X-Probe"] == "same-session"


def test_every_request_says_who_sends_it(conn, requests_mock):
    from airflow_provider_scriptrunner import __version__

    requests_mock.get(f"{BASE_URL}/healthz", json={"ok": True})
    ScriptRunnerHook().health()
    assert requests_mock.last_request.headers["User-Agent"] == f"airflow-provider-scriptrunner/{__version__}"


def test_a_connection_of_another_type_warns(set_connection, requests_mock, task_log):
    set_connection(conn_type="http", host="sr.test", port=8080)
    requests_mock.get(f"{BASE_URL}/healthz", json={"ok": True})
    ScriptRunnerHook().health()  # still usable
    assert "has type 'http', expected 'scriptrunner'" in task_log.text


def test_job_url_keeps_the_path_prefix(set_connection):
    set_connection(host="https://proxy.example/script-runner/")
    assert ScriptRunnerHook().get_job_url("job_1_2") == "https://proxy.example/script-runner/jobs/job_1_2"
    assert ScriptRunnerHook().get_job_url("a/b") == "https://proxy.example/script-runner/jobs/a%2Fb"


# -- validation before any request ------------------------------------------------------------


@pytest.mark.parametrize(
    ("script_id", "args", "error", "match"),
    [
        (None, [], TypeError, "script_id must be a string"),
        (5, [], TypeError, "script_id must be a string"),
        ("", [], ValueError, "script_id is empty"),
        ("  ", [], ValueError, "script_id is empty"),
        ("s", "a", TypeError, r"wrap a single argument in a list, e\.g\. args=\['a'\]"),
        ("s", "a b", TypeError, r"give each argument as its own item, e\.g\. args=\['a', 'b'\]"),
        ("s", {"a": 1}, TypeError, "args must be a list or tuple"),
        ("s", ["ok", None], TypeError, r"args\[1\] must be a string"),
        ("s", ["ok", "x", {"k": 1}], TypeError, r"args\[2\] must be a string"),
        ("s", [True], TypeError, r"args\[0\] must be a string"),
        ("s", [b"bytes"], TypeError, r"args\[0\] must be a string"),
    ],
)
def test_bad_run_input_fails_before_any_request(conn, requests_mock, script_id, args, error, match):
    with pytest.raises(error, match=match):
        ScriptRunnerHook().submit_script(script_id, args)
    assert requests_mock.call_count == 0


def test_tuple_args_are_accepted(conn, requests_mock):
    requests_mock.post(
        f"{BASE_URL}/run", status_code=202, json={"ok": True, "jobId": "j", "status": "queued"}
    )
    ScriptRunnerHook().submit_script("s", ("x", 3))
    assert requests_mock.last_request.json()["args"] == ["x", "3"]


@pytest.mark.parametrize(
    ("job_id", "error"),
    [(None, TypeError), (12, TypeError), ("", ValueError), ("..", ValueError), (".", ValueError)],
)
def test_bad_job_ids_fail_before_any_request(conn, requests_mock, job_id, error):
    hook = ScriptRunnerHook()
    for call in (hook.get_job, hook.cancel_job, hook.get_log_page):
        with pytest.raises(error, match="job_id"):
            call(job_id)
    assert requests_mock.call_count == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"stream": "both"}, ValueError, "stream must be 'stdout' or 'stderr'"),
        ({"offset": -1}, ValueError, "offset must be a byte offset >= 0, got -1"),
        ({"offset": "0"}, TypeError, "offset must be a byte offset >= 0, got str"),
        ({"limit": 0}, ValueError, "limit must be a number of bytes between 1 and 1048576, got 0"),
        (
            {"limit": 2_000_000},
            ValueError,
            "limit must be a number of bytes between 1 and 1048576, got 2000000",
        ),
    ],
)
def test_bad_log_arguments_fail_before_any_request(conn, requests_mock, kwargs, error, match):
    with pytest.raises(error, match=match):
        ScriptRunnerHook().get_log_page("job_1", **kwargs)
    assert requests_mock.call_count == 0


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "SCRIPT_NOT_FOUND", ScriptRunnerApiError),
        (400, "INVALID_ARGS", ScriptRunnerApiError),
        (404, "NOT_FOUND", ScriptRunnerApiError),
        (500, "INTERNAL_ERROR", ScriptRunnerApiError),
    ],
)
def test_api_errors_carry_status_code_and_message(conn, requests_mock, status, code, cls):
    requests_mock.post(
        f"{BASE_URL}/run",
        status_code=status,
        json={"ok": False, "error": {"code": code, "message": "arg[0] bad"}},
    )
    with pytest.raises(cls) as info:
        ScriptRunnerHook().submit_script("s", ["x"])
    err = info.value
    assert (err.status_code, err.error_code, err.message) == (status, code, "arg[0] bad")
    assert err.method == "POST" and err.url == f"{BASE_URL}/run"
    assert requests_mock.call_count == 1


def test_job_not_found_has_its_own_class(conn, requests_mock):
    requests_mock.get(
        f"{BASE_URL}/jobs/nope",
        status_code=404,
        json={"ok": False, "error": {"code": "JOB_NOT_FOUND", "message": "job not found"}},
    )
    with pytest.raises(ScriptRunnerJobNotFoundError) as info:
        ScriptRunnerHook().get_job("nope")
    assert info.value.error_code == "JOB_NOT_FOUND" and info.value.status_code == 404


@pytest.mark.parametrize("status", [401, 403])
def test_auth_rejected(conn, requests_mock, status):
    requests_mock.get(f"{BASE_URL}/healthz", status_code=status, text="<html>denied</html>")
    with pytest.raises(ScriptRunnerAuthError, match="authentication rejected") as info:
        ScriptRunnerHook().health()
    assert info.value.status_code == status


@pytest.mark.parametrize(
    ("status", "text", "match"),
    [
        (200, "<html>hello</html>", "not a JSON object"),
        (200, '{"ok": true, "jobId": "j", "status": "ru', "not a JSON object"),
        (200, "[1, 2]", "JSON is not an object"),
        (404, "<html>Not Found</html>", "not a script-runner API"),
        (500, "<html>oops</html>", "not script-runner JSON"),
    ],
)
def test_non_json_and_truncated_bodies_are_their_own_error(conn, requests_mock, status, text, match):
    requests_mock.get(f"{BASE_URL}/jobs/j", status_code=status, text=text)
    with pytest.raises(ScriptRunnerResponseError, match=match) as info:
        ScriptRunnerHook().get_job("j")
    assert info.value.status_code == status and info.value.error_code is None
    assert info.value.body_excerpt == text[:200]


def test_malformed_job_object(conn, requests_mock):
    requests_mock.get(f"{BASE_URL}/jobs/j", json={"ok": True, "status": "running"})
    with pytest.raises(
        ScriptRunnerResponseError, match="malformed response: job object has no jobId"
    ) as info:
        ScriptRunnerHook().get_job("j")
    assert (info.value.method, info.value.url) == ("GET", f"{BASE_URL}/jobs/j")


def test_malformed_log_page(conn, requests_mock):
    requests_mock.get(f"{BASE_URL}/jobs/j/logs", json={"ok": True, "data": "x"})
    with pytest.raises(ScriptRunnerResponseError, match="malformed response") as info:
        ScriptRunnerHook().get_log_page("j")
    assert (info.value.method, info.value.url) == ("GET", f"{BASE_URL}/jobs/j/logs")


# -- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_get_is_retried_on_transient_status(conn, requests_mock, status):
    requests_mock.get(
        f"{BASE_URL}/jobs/j", [{"status_code": status, "text": "busy"}, {"json": job_body("j")}]
    )
    assert ScriptRunnerHook().get_job("j").job_id == "j"
    assert requests_mock.call_count == 2


@pytest.mark.parametrize(
    "exc",
    [
        REFUSED,
        RESET_AFTER_SEND,
        requests.exceptions.ReadTimeout("slow"),
        requests.exceptions.ConnectTimeout("slow"),
    ],
)
def test_get_and_cancel_are_retried_on_connection_errors(conn, requests_mock, exc):
    requests_mock.get(f"{BASE_URL}/jobs/j", [{"exc": exc}, {"json": job_body("j")}])
    requests_mock.post(f"{BASE_URL}/jobs/j/cancel", [{"exc": exc}, {"json": job_body("j")}])
    hook = ScriptRunnerHook()
    hook.get_job("j")
    hook.cancel_job("j")
    assert requests_mock.call_count == 4


@pytest.mark.parametrize("status", [400, 404, 500])
def test_get_is_not_retried_on_other_errors(conn, requests_mock, status):
    requests_mock.get(
        f"{BASE_URL}/jobs/j", status_code=status, json={"ok": False, "error": {"code": "X", "message": "m"}}
    )
    with pytest.raises(ScriptRunnerApiError):
        ScriptRunnerHook().get_job("j")
    assert requests_mock.call_count == 1


def test_retries_give_up_with_an_error_naming_the_url(conn, requests_mock):
    requests_mock.get(f"{BASE_URL}/healthz", exc=REFUSED)
    with pytest.raises(
        ScriptRunnerConnectionError,
        match=r"Cannot reach script-runner at http://sr.test:8080/healthz: connection refused",
    ) as info:
        ScriptRunnerHook().health()
    assert requests_mock.call_count == 4  # 1 + the default 3 retries
    assert info.value.may_have_reached_server is False


def test_retry_count_comes_from_connection_extra(set_connection, requests_mock):
    set_connection(host="sr.test", port=8080, extra={"retries": 0})
    requests_mock.get(f"{BASE_URL}/healthz", status_code=503, text="")
    with pytest.raises(ScriptRunnerResponseError):
        ScriptRunnerHook().health()
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_run_is_retried_when_the_connection_could_not_be_made(conn, requests_mock, mode):
    requests_mock.post(
        f"{BASE_URL}/run",
        [
            {"exc": REFUSED},
            {"exc": requests.exceptions.ConnectTimeout("x")},
            {"status_code": 202, "json": {"ok": True, "jobId": "j1", "status": "queued"}}
            if mode == "async"
            else {"json": job_body("j1", "succeeded")},
        ],
    )
    hook = ScriptRunnerHook()
    result = hook.submit_script("s") if mode == "async" else hook.run_script("s").job_id
    assert result == "j1"
    assert requests_mock.call_count == 3


@pytest.mark.parametrize(
    "response",
    [
        {"exc": requests.exceptions.ReadTimeout("read timed out")},
        {"exc": RESET_AFTER_SEND},
        {"exc": requests.exceptions.ChunkedEncodingError("cut")},
        {"status_code": 502, "text": "<html>bad gateway</html>"},
        {"status_code": 503, "text": ""},
        {"status_code": 504, "text": ""},
        {"status_code": 429, "text": ""},
    ],
)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_run_is_never_retried_once_it_may_have_reached_the_server(conn, requests_mock, response, mode):
    requests_mock.post(
        f"{BASE_URL}/run",
        [response, {"status_code": 202, "json": {"ok": True, "jobId": "dup", "status": "queued"}}],
    )
    hook = ScriptRunnerHook()
    with pytest.raises((ScriptRunnerConnectionError, ScriptRunnerApiError)) as info:
        hook.submit_script("s") if mode == "async" else hook.run_script("s")
    assert requests_mock.call_count == 1
    if isinstance(info.value, ScriptRunnerConnectionError):
        assert info.value.may_have_reached_server is True
        assert "may have reached the server and started the script" in str(info.value)


@pytest.mark.parametrize("status", [500, 502])
def test_a_5xx_to_run_says_the_script_may_have_started(conn, requests_mock, status):
    requests_mock.post(f"{BASE_URL}/run", status_code=status, text="<html>oops</html>")
    with pytest.raises(ScriptRunnerApiError, match="may have reached the server and started the script"):
        ScriptRunnerHook().submit_script("s")
    requests_mock.post(
        f"{BASE_URL}/run",
        status_code=400,
        json={"ok": False, "error": {"code": "INVALID_ARGS", "message": "arg[0] bad"}},
    )
    with pytest.raises(ScriptRunnerApiError) as info:
        ScriptRunnerHook().submit_script("s")
    assert "may have" not in str(info.value)  # a 4xx never started anything


def test_read_timeout_error_names_the_timeout(set_connection, requests_mock):
    set_connection(host="sr.test", port=8080, extra={"timeout": 3, "retries": 0})
    requests_mock.get(f"{BASE_URL}/jobs/j", exc=requests.exceptions.ReadTimeout("x"))
    with pytest.raises(ScriptRunnerTimeoutError, match="no response within 3 s"):
        ScriptRunnerHook().get_job("j")


# -- whole-stream logs ------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [4, 5, 7, 4096, 65536])
def test_iter_log_reassembles_multibyte_text_exactly(conn, requests_mock, page_size):
    blob = mixed_text(3 * 1024 * 1024 if page_size == 65536 else 3000 if page_size < 10 else 20_000)
    requests_mock.get(f"{BASE_URL}/jobs/j/logs", json=log_page_callback({"stdout": blob}))
    chunks = list(ScriptRunnerHook().iter_log("j", page_size=page_size))
    assert "".join(c.text for c in chunks).encode() == blob
    assert "\ufffd" not in "".join(c.text for c in chunks)
    assert chunks[-1].next_offset == len(blob)
    assert all(len(c.text.encode()) == c.next_offset - c.offset for c in chunks)
    if page_size == 65536:
        assert max(c.next_offset - c.offset for c in chunks) <= page_size
        assert len(chunks) >= len(blob) // page_size


def test_iter_log_from_offset_and_empty_stream(conn, requests_mock):
    requests_mock.get(
        f"{BASE_URL}/jobs/j/logs", json=log_page_callback({"stdout": "héllo".encode(), "stderr": b""})
    )
    hook = ScriptRunnerHook()
    assert [c.text for c in hook.iter_log("j", offset=3)] == ["llo"]
    assert list(hook.iter_log("j", "stderr")) == []


def test_iter_log_reports_truncation(conn, requests_mock):
    requests_mock.get(f"{BASE_URL}/jobs/j/logs", json=log_page_callback({"stdout": b"abc"}, truncated=True))
    chunks = list(ScriptRunnerHook().iter_log("j"))
    assert chunks[-1].truncated is True


def test_iter_log_of_a_running_job_holds_back_a_cut_character(conn, requests_mock):
    blob = "ab€".encode()[:-1]  # the script has written only 2 of the 3 bytes of '€' so far
    requests_mock.get(f"{BASE_URL}/jobs/j/logs", json=log_page_callback({"stdout": blob}))
    hook = ScriptRunnerHook()
    chunks = list(hook.iter_log("j", stream_complete=False))
    assert [c.text for c in chunks] == ["ab"] and chunks[-1].next_offset == 2
    # When the stream is complete (e.g. the server truncated inside a character) the rest is given as the server has it.
    assert "".join(c.text for c in hook.iter_log("j")) == "ab\ufffd"


def test_iter_log_keeps_invalid_bytes_as_the_server_gives_them(conn, requests_mock):
    blob = b"ok\xff\xfe tail"
    requests_mock.get(f"{BASE_URL}/jobs/j/logs", json=log_page_callback({"stdout": blob}))
    assert "".join(c.text for c in ScriptRunnerHook().iter_log("j", page_size=4)) == blob.decode(
        "utf-8", "replace"
    )


class CutBody(io.RawIOBase):
    """A response body that breaks off after ``cut`` bytes, as a dropped connection does."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut, self.position = data, cut, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.position >= self.cut:
            raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead")
        size = min(len(buffer), self.cut - self.position)
        buffer[:size] = self.data[self.position : self.position + size]
        self.position += size
        return size


def test_iter_log_reads_a_page_again_after_a_body_cut_off_or_a_busy_answer(conn, requests_mock):
    blob = mixed_text(50_000)
    calls = []

    def body(request, context):
        query = parse_qs(urlsplit(request.url).query)
        answer = json.dumps(
            log_page({"stdout": blob}, "stdout", int(query["offset"][0]), int(query["limit"][0]), "j")
        ).encode()
        calls.append(int(query["offset"][0]))
        if len(calls) == 2:
            return CutBody(answer, len(answer) // 2)  # the second page breaks off halfway
        if len(calls) == 4:
            context.status_code = 503
            return io.BytesIO(b"<html>busy</html>")
        return io.BytesIO(answer)

    requests_mock.get(f"{BASE_URL}/jobs/j/logs", body=body)
    chunks = list(ScriptRunnerHook().iter_log("j", page_size=16_384))
    assert "".join(c.text for c in chunks).encode() == blob  # every byte once, none twice
    assert len(chunks) >= 4 and len(calls) == len(chunks) + 2
    assert calls[1] == calls[2] and calls[3] == calls[4]  # each failed page asked for again, from its offset


def test_iter_log_errors_name_the_logs_url_and_are_not_retried(conn, requests_mock):
    gone = {"ok": False, "error": {"code": "JOB_NOT_FOUND", "message": "job not found: j"}}
    requests_mock.get(f"{BASE_URL}/jobs/j/logs", status_code=404, json=gone)
    with pytest.raises(ScriptRunnerJobNotFoundError) as info:
        list(ScriptRunnerHook().iter_log("j"))
    assert (info.value.method, info.value.url) == ("GET", f"{BASE_URL}/jobs/j/logs")

    requests_mock.get(f"{BASE_URL}/jobs/j/logs", text='{"ok": true, "data": "bad \\x escape", "offset": 0}')
    with pytest.raises(ScriptRunnerResponseError, match="not a JSON object") as info:
        list(ScriptRunnerHook().iter_log("j"))
    assert info.value.status_code == 200
    assert requests_mock.call_count == 2  # one request each: neither answer is transient


def test_iter_log_rejects_a_page_size_too_small_for_a_character(conn, requests_mock):
    with pytest.raises(ValueError, match="page_size must be a number of bytes between 4 and 1048576, got 3"):
        list(ScriptRunnerHook().iter_log("j", page_size=3))
    assert requests_mock.call_count == 0


# -- test_connection --------------------------------------------------------------------------


def test_test_connection_ok(conn, requests_mock):
    requests_mock.get(f"{BASE_URL}/healthz", json={"ok": True})
    ok, message = ScriptRunnerHook().test_connection()
    assert ok is True and "healthy" in message and BASE_URL in message


@pytest.mark.parametrize(
    ("mock", "expected"),
    [
        ({"exc": REFUSED}, "Could not connect to http://sr.test:8080/healthz: connection refused"),
        (
            {"status_code": 404, "text": "<html>nginx</html>"},
            "Not a script-runner at http://sr.test:8080/healthz (HTTP 404)",
        ),
        ({"status_code": 200, "text": "<html>welcome</html>"}, "Not a script-runner"),
        ({"status_code": 401, "text": ""}, "Authentication rejected (HTTP 401)"),
        ({"status_code": 403, "text": ""}, "Authentication rejected (HTTP 403)"),
        ({"exc": requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED")}, "TLS failure talking to"),
        ({"exc": requests.exceptions.ReadTimeout("x")}, "Timed out talking to"),
    ],
)
def test_test_connection_says_what_is_wrong(set_connection, requests_mock, mock, expected):
    set_connection(host="sr.test", port=8080, extra={"retries": 0})
    requests_mock.get(f"{BASE_URL}/healthz", **mock)
    ok, message = ScriptRunnerHook().test_connection()
    assert ok is False
    assert expected in message


def test_test_connection_reports_a_bad_connection_config(set_connection):
    set_connection(host="")
    ok, message = ScriptRunnerHook().test_connection()
    assert ok is False and "no host" in message


def test_test_connection_against_a_closed_port(set_connection, unused_tcp_port):
    set_connection(host="127.0.0.1", port=unused_tcp_port, extra={"retries": 0})
    ok, message = ScriptRunnerHook().test_connection()
    assert ok is False
    assert f"Could not connect to http://127.0.0.1:{unused_tcp_port}/healthz" in message


def test_tls_error_class(set_connection, requests_mock):
    set_connection(host="sr.test", port=8080, extra={"retries": 0})
    requests_mock.get(f"{BASE_URL}/healthz", exc=requests.exceptions.SSLError("bad cert"))
    with pytest.raises(ScriptRunnerTLSError, match="check verify_ssl / ca_bundle"):
        ScriptRunnerHook().health()
