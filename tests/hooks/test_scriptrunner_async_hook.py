"""ScriptRunnerAsyncHook (httpx) with httpx.MockTransport: same semantics as the sync hook."""

from __future__ import annotations

import random
import re

import aiohttp
import httpx
import pytest

from airflow_provider_scriptrunner.client.backends.httpx_backend import HttpxBackend
from airflow_provider_scriptrunner.client.errors import (
    ScriptRunnerApiError,
    ScriptRunnerConnectionError,
    ScriptRunnerJobNotFoundError,
    ScriptRunnerResponseError,
    ScriptRunnerTimeoutError,
)
from airflow_provider_scriptrunner.client.models import JobStatus
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerAsyncHook
from tests.conftest import BASE_URL, TOKEN, job_body


class Recorder:
    """An httpx transport that answers from a list of handlers and records each request."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        status, body = answer
        if isinstance(body, (dict, list)):
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=body)

    def hook(self, **kwargs) -> ScriptRunnerAsyncHook:
        return ScriptRunnerAsyncHook(transport=httpx.MockTransport(self), **kwargs)


def log_handler(blob: bytes):
    def handle(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params.get("offset", 0))
        limit = int(request.url.params.get("limit", 65536))
        end = min(len(blob), offset + limit) if offset < len(blob) else offset
        return httpx.Response(
            200,
            json={
                "ok": True, "jobId": "j", "stream": request.url.params["stream"], "offset": offset,
                "nextOffset": end, "totalSize": len(blob), "truncated": False,
                "data": blob[offset:end].decode("utf-8", errors="replace"),
            },
        )  # fmt: skip

    return handle


@pytest.mark.asyncio
async def test_get_job_and_headers(set_connection):
    set_connection(host="sr.test", port=8080, password=TOKEN, extra={"headers": {"X-Team": "data"}})
    transport = Recorder((200, job_body("job_1", "succeeded")))
    async with transport.hook() as hook:
        job = await hook.get_job("job_1")
    assert job.status is JobStatus.SUCCEEDED and job.exit_code == 0
    sent = transport.requests[0]
    assert str(sent.url) == f"{BASE_URL}/jobs/job_1"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["X-Team"] == "data"
    assert TOKEN not in repr(hook)


@pytest.mark.asyncio
async def test_one_client_per_hook_and_close(conn):
    transport = Recorder((200, {"ok": True}))
    hook = transport.hook()
    await hook.health()
    backend = await hook.get_backend()
    await hook.health()
    assert await hook.get_backend() is backend
    assert isinstance(backend, HttpxBackend) and backend.shared_key is None  # its own, over the transport
    await hook.close()
    assert backend.client.is_closed
    await hook.close()  # closing twice is harmless


@pytest.mark.asyncio
async def test_cancel_and_log_page(conn):
    transport = Recorder((200, job_body("j", "running")), log_handler(b"hello"))
    hook = transport.hook()
    assert (await hook.cancel_job("j")).status is JobStatus.RUNNING
    page = await hook.get_log_page("j", "stderr", offset=1, limit=2)
    assert page.data == "el" and page.next_offset == 3
    assert transport.requests[0].method == "POST" and transport.requests[0].url.path == "/jobs/j/cancel"
    assert dict(transport.requests[1].url.params) == {"stream": "stderr", "offset": "1", "limit": "2"}
    await hook.close()


@pytest.mark.asyncio
async def test_iter_log_exact_multibyte(conn):
    rng = random.Random(3)
    blob = "".join(rng.choice(["x", "é", "中", "😀", "\n"]) for _ in range(30_000)).encode()
    hook = Recorder(log_handler(blob)).hook()
    text = "".join([chunk.text async for chunk in hook.iter_log("j", page_size=1000)])
    assert text.encode() == blob
    await hook.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_transient_status_is_retried(conn, status):
    transport = Recorder((status, "<html>busy</html>"), (200, job_body("j")))
    hook = transport.hook()
    assert (await hook.get_job("j")).job_id == "j"
    assert len(transport.requests) == 2
    await hook.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("dropped"),
        httpx.ReadError("reset"),
    ],
)
async def test_transport_errors_are_retried(conn, error):
    transport = Recorder(error, (200, job_body("j")))
    hook = transport.hook()
    await hook.get_job("j")
    assert len(transport.requests) == 2
    await hook.close()


@pytest.mark.asyncio
async def test_errors_map_like_the_sync_hook(set_connection):
    set_connection(host="sr.test", port=8080, extra={"retries": 1, "timeout": 2})
    not_found = {"ok": False, "error": {"code": "JOB_NOT_FOUND", "message": "job not found"}}
    hook = Recorder((404, not_found)).hook()
    with pytest.raises(ScriptRunnerJobNotFoundError) as info:
        await hook.get_job("gone")
    assert info.value.error_code == "JOB_NOT_FOUND"
    assert (info.value.method, info.value.url) == ("GET", f"{BASE_URL}/jobs/gone")
    hook = Recorder((200, "<html>")).hook()
    with pytest.raises(ScriptRunnerResponseError):
        await hook.get_job("j")
    hook = Recorder((200, {"ok": True, "status": "running"})).hook()
    with pytest.raises(
        ScriptRunnerResponseError, match="malformed response: job object has no jobId"
    ) as info:
        await hook.cancel_job("j")
    assert (info.value.method, info.value.url) == ("POST", f"{BASE_URL}/jobs/j/cancel")
    hook = Recorder((200, {"ok": True, "jobId": "j", "data": "x"})).hook()
    with pytest.raises(ScriptRunnerResponseError, match="malformed response: log page") as info:
        await hook.get_log_page("j")
    assert (info.value.method, info.value.url) == ("GET", f"{BASE_URL}/jobs/j/logs")
    hook = Recorder((500, {"ok": False, "error": {"code": "INTERNAL_ERROR", "message": "x"}})).hook()
    with pytest.raises(ScriptRunnerApiError) as info:
        await hook.get_job("j")
    assert info.value.status_code == 500
    transport = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(
        ScriptRunnerConnectionError,
        match=re.escape("Cannot reach script-runner at http://sr.test:8080/jobs/j"),
    ):
        await transport.hook().get_job("j")
    assert len(transport.requests) == 2
    with pytest.raises(ScriptRunnerTimeoutError, match="no response within 2 s"):
        await Recorder(httpx.ReadTimeout("slow")).hook().get_job("j")


@pytest.mark.asyncio
async def test_validation_before_any_request(conn):
    transport = Recorder((200, {"ok": True}))
    hook = transport.hook()
    with pytest.raises(ValueError):
        await hook.get_job("..")
    with pytest.raises(TypeError):
        await hook.cancel_job(None)
    with pytest.raises(ValueError):
        await hook.get_log_page("j", offset=-5)
    assert transport.requests == []


@pytest.mark.asyncio
async def test_async_test_connection(conn):
    ok, message = await Recorder((200, {"ok": True})).hook().test_connection()
    assert ok and "healthy" in message
    ok, message = await Recorder((404, "<html>nope</html>")).hook().test_connection()
    assert not ok and "Not a script-runner" in message


@pytest.mark.asyncio
async def test_against_a_closed_port(set_connection, unused_tcp_port):
    set_connection(host="127.0.0.1", port=unused_tcp_port, extra={"retries": 0})
    hook = ScriptRunnerAsyncHook()
    with pytest.raises(ScriptRunnerConnectionError) as info:
        await hook.health()
    assert info.value.may_have_reached_server is False
    await hook.close()
    assert info.value.url == f"http://127.0.0.1:{unused_tcp_port}/healthz"


# -- TLS settings reach the async client ------------------------------------------------------


def _self_signed_ca(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scriptrunner-test-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256())
    )  # fmt: skip
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(params=["aiohttp", "httpx"])
def client_tls(request, monkeypatch):
    """The keyword arguments the shared client of either library is built with; TLS as ``verify``."""
    seen = {}
    monkeypatch.setattr(ScriptRunnerAsyncHook, "http_client", request.param)
    if request.param == "httpx":
        real = httpx.AsyncClient
        monkeypatch.setattr(httpx, "AsyncClient", lambda **kw: seen.update(kw) or real(**kw))
    else:
        real_connector = aiohttp.TCPConnector
        monkeypatch.setattr(
            aiohttp, "TCPConnector", lambda **kw: seen.update(verify=kw["ssl"]) or real_connector(**kw)
        )
    return seen


@pytest.mark.asyncio
@pytest.mark.parametrize("extra", [{"verify_ssl": False}, {"verify_ssl": "false"}])
async def test_verify_ssl_false_turns_verification_off(set_connection, client_tls, extra):
    seen = client_tls
    set_connection(host="https://sr.test", extra=extra)
    hook = ScriptRunnerAsyncHook()
    await hook.get_backend()
    await hook.close()
    assert seen["verify"] is False


@pytest.mark.asyncio
async def test_ca_bundle_is_the_only_trust_of_the_async_client(set_connection, client_tls, tmp_path):
    import ssl

    ca = _self_signed_ca(tmp_path)
    seen = client_tls
    set_connection(host="https://sr.test", extra={"ca_bundle": str(ca)})
    hook = ScriptRunnerAsyncHook()
    await hook.get_backend()
    await hook.close()
    context = seen["verify"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode is ssl.CERT_REQUIRED
    subjects = [dict(pair[0] for pair in cert["subject"]) for cert in context.get_ca_certs()]
    assert subjects == [{"commonName": "scriptrunner-test-ca"}]
