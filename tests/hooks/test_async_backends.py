"""
The async hook's backends over real loopback HTTP, on both client libraries: the shared client's
lifetime (client/backends/pool.py: per event loop and connection settings, counted by hook) and the
same requests, errors and retries on aiohttp as on httpx.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_scriptrunner import __version__
from airflow_provider_scriptrunner.client.backends import pool
from airflow_provider_scriptrunner.client.backends.aiohttp_backend import AiohttpBackend, env_proxy
from airflow_provider_scriptrunner.client.backends.httpx_backend import HttpxBackend
from airflow_provider_scriptrunner.client.errors import (
    ScriptRunnerConnectionError,
    ScriptRunnerJobNotFoundError,
    ScriptRunnerResponseError,
    ScriptRunnerTimeoutError,
    ScriptRunnerTLSError,
)
from airflow_provider_scriptrunner.hooks.scriptrunner import ScriptRunnerAsyncHook
from tests.conftest import TOKEN, job_body


class LoopbackServer:
    """
    An HTTP/1.1 server on 127.0.0.1 (keep-alive) answering from ``answers`` in order (the last
    repeats), recording each request's line and headers. An answer is ``(status, body)``,
    ``"drop"`` (close without answering), ``"hang"`` (never answer) or raw bytes.
    """

    def __init__(self, *answers):
        self.answers = list(answers) or [(200, {"ok": True})]
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> LoopbackServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader, writer) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *rest = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in rest if h)}
                self.requests.append((line, headers))
                answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
                if answer == "drop":
                    break
                if answer == "hang":
                    await asyncio.sleep(3600)
                if isinstance(answer, bytes):
                    writer.write(answer)
                else:
                    status, body = answer
                    data = (json.dumps(body) if isinstance(body, dict) else body).encode()
                    kind = "application/json" if isinstance(body, dict) else "text/html"
                    writer.write(
                        f"HTTP/1.1 {status} X\r\nContent-Type: {kind}; charset=utf-8\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n".encode()
                        + data
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


LIBRARY_CLASS = {"aiohttp": AiohttpBackend, "httpx": HttpxBackend}


def _closed(backend) -> bool:
    """Whether the library's own client under ``backend`` is closed."""
    return backend.client.is_closed if isinstance(backend, HttpxBackend) else backend.session.closed


@pytest.fixture(params=["aiohttp", "httpx"])
def backend(request, monkeypatch):
    """Run the test on each library of the shared client."""
    monkeypatch.setattr(ScriptRunnerAsyncHook, "http_client", request.param)
    return request.param


def point_at(set_connection, server: LoopbackServer, conn_id: str = "scriptrunner_default", **extra):
    set_connection(conn_id, host="127.0.0.1", port=server.port, extra={"retries": 2, **extra})


# -- one client per event loop and settings, closed with its last hook ---------------------------


@pytest.mark.asyncio
async def test_hooks_share_one_client_until_the_last_closes(set_connection, backend):
    async with LoopbackServer() as server:
        point_at(set_connection, server)
        first, second = ScriptRunnerAsyncHook(), ScriptRunnerAsyncHook()
        await first.health()
        await second.health()
        client = await first.get_backend()
        assert await second.get_backend() is client
        assert isinstance(client, LIBRARY_CLASS[backend]) and client.shared_key is not None
        assert pool.shared_count() == 1
        assert server.connections == 1  # one pool: the second hook reused the first one's connection

        await first.close()
        assert not _closed(client)  # the second hook still holds it
        await second.health()
        await second.close()
        assert _closed(client)
        assert pool.shared_count() == 0

        third = ScriptRunnerAsyncHook()
        assert await third.get_backend() is not client  # a new one after the last was closed
        await third.close()
        await third.close()  # twice is harmless: counted once
        assert pool.shared_count() == 0


@pytest.mark.asyncio
async def test_other_settings_get_their_own_client(set_connection, backend):
    async with LoopbackServer() as server:
        point_at(set_connection, server, "sr_a")
        point_at(set_connection, server, "sr_b", headers={"X-Team": "b"})
        point_at(set_connection, server, "sr_c", headers={"X-Team": "b"})
        a, b, c = ScriptRunnerAsyncHook("sr_a"), ScriptRunnerAsyncHook("sr_b"), ScriptRunnerAsyncHook("sr_c")
        clients = [await hook.get_backend() for hook in (a, b, c)]
        assert clients[0] is not clients[1]
        assert clients[1] is clients[2]  # other connection id, same settings
        for hook in (a, b, c):
            await hook.close()
        assert all(_closed(client) for client in clients)


def test_each_event_loop_gets_its_own_client(set_connection, backend):
    set_connection(host="127.0.0.1", port=9)

    async def one() -> tuple[object, int]:
        hook = ScriptRunnerAsyncHook()
        client = await hook.get_backend()
        count = pool.shared_count()
        await hook.close()
        return client, count

    async def both() -> None:
        hook = ScriptRunnerAsyncHook()
        mine = await hook.get_backend()
        other, count = await asyncio.to_thread(asyncio.run, one())  # another loop, meanwhile
        assert other is not mine and count == 2
        await hook.close()

    asyncio.run(both())
    assert pool.shared_count() == 0


@pytest.mark.asyncio
async def test_concurrent_first_requests_create_one_client(set_connection, backend):
    async with LoopbackServer() as server:
        point_at(set_connection, server)
        hooks = [ScriptRunnerAsyncHook() for _ in range(20)]
        await asyncio.gather(*(hook.health() for hook in hooks), *(hooks[0].health() for _ in range(5)))
        assert len({id(await hook.get_backend()) for hook in hooks}) == 1
        for hook in hooks:
            await hook.close()
        assert pool.shared_count() == 0


# -- the same requests and errors on either library ----------------------------------------------


class SlowServer(LoopbackServer):
    """Answers each new connection's first request 0.1 s late; counts the connections open at once."""

    def __init__(self) -> None:
        super().__init__()
        self.open = self.most_open = 0

    async def _handle(self, reader, writer) -> None:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await asyncio.sleep(0.1)
            await super()._handle(reader, writer)
        finally:
            self.open -= 1


@pytest.mark.asyncio
async def test_the_shared_pool_bounds_connections_to_the_server(set_connection, backend, monkeypatch):
    monkeypatch.setattr(pool, "ASYNC_POOL_CONNECTIONS", 3)
    async with SlowServer() as server:
        point_at(set_connection, server)
        hooks = [ScriptRunnerAsyncHook() for _ in range(20)]
        results = await asyncio.gather(*(hook.health() for hook in hooks))
        for hook in hooks:
            await hook.close()
    assert len(results) == 20 and len(server.requests) == 20  # every request answered, none retried
    assert server.most_open == server.connections == 3  # 20 triggers' requests over 3 connections


@pytest.mark.asyncio
async def test_request_line_and_headers(set_connection, backend):
    page = {
        "ok": True,
        "jobId": "job_1",
        "stream": "stderr",
        "offset": 3,
        "nextOffset": 5,
        "totalSize": 5,
        "data": "lo",
    }
    async with LoopbackServer((200, job_body("job_1", "succeeded")), (200, page)) as server:
        set_connection(
            host="127.0.0.1", port=server.port, password=TOKEN, extra={"headers": {"X-Team": "data"}}
        )
        async with ScriptRunnerAsyncHook() as hook:
            job = await hook.get_job("job_1")
            log = await hook.get_log_page("job_1", "stderr", offset=3, limit=5)
    assert job.job_id == "job_1" and log.data == "lo"
    (line, headers), (log_line, _) = server.requests
    assert line == "GET /jobs/job_1 HTTP/1.1"
    assert log_line == "GET /jobs/job_1/logs?stream=stderr&offset=3&limit=5 HTTP/1.1"
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["x-team"] == "data"
    assert headers["user-agent"] == f"airflow-provider-scriptrunner/{__version__}"
    assert headers["accept"] == "application/json"
    assert "cookie" not in headers


@pytest.mark.asyncio
async def test_transient_status_and_dropped_connection_are_retried(set_connection, backend):
    async with LoopbackServer((503, "<html>busy</html>"), "drop", (200, job_body("j"))) as server:
        point_at(set_connection, server)
        async with ScriptRunnerAsyncHook() as hook:
            assert (await hook.get_job("j")).job_id == "j"
    assert len(server.requests) == 3


@pytest.mark.asyncio
async def test_errors_map_alike(set_connection, backend, unused_tcp_port):
    not_found = {"ok": False, "error": {"code": "JOB_NOT_FOUND", "message": "job not found: gone"}}
    async with LoopbackServer((404, not_found)) as server:
        point_at(set_connection, server)
        async with ScriptRunnerAsyncHook() as hook:
            with pytest.raises(ScriptRunnerJobNotFoundError) as info:
                await hook.get_job("gone")
    assert info.value.status_code == 404 and info.value.message == "job not found: gone"
    assert len(server.requests) == 1  # not transient

    # A redirect is not followed: it is not a script-runner answer.
    redirect = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n"
    async with LoopbackServer(redirect) as server:
        point_at(set_connection, server)
        async with ScriptRunnerAsyncHook() as hook:
            with pytest.raises(ScriptRunnerResponseError) as info:
                await hook.get_job("j")
    assert info.value.status_code == 302 and len(server.requests) == 1

    async with LoopbackServer("drop") as server:
        point_at(set_connection, server, retries=0)
        async with ScriptRunnerAsyncHook() as hook:
            with pytest.raises(
                ScriptRunnerConnectionError, match="connection broken during the request"
            ) as info:
                await hook.get_job("j")
    assert info.value.may_have_reached_server is True

    async with LoopbackServer("hang") as server:
        point_at(set_connection, server, retries=0, timeout=0.2)
        async with ScriptRunnerAsyncHook() as hook:
            with pytest.raises(ScriptRunnerTimeoutError, match=r"no response within 0\.2 s") as info:
                await hook.get_job("j")
    assert info.value.may_have_reached_server is True

    set_connection(host="127.0.0.1", port=unused_tcp_port, extra={"retries": 0})
    async with ScriptRunnerAsyncHook() as hook:
        with pytest.raises(ScriptRunnerConnectionError, match="connection refused") as info:
            await hook.health()
    assert info.value.may_have_reached_server is False


class NotTlsProxy(LoopbackServer):
    """A proxy that accepts a CONNECT tunnel, then answers the TLS handshake with plain HTTP."""

    async def _handle(self, reader, writer) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append((head.decode("latin-1").split("\r\n")[0], {}))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await reader.read(100)  # the ClientHello
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.asyncio
async def test_a_tls_failure_says_so_and_never_shows_the_proxy_password(set_connection, backend, monkeypatch):
    async with NotTlsProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://user:pa55@127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        set_connection(host="https://sr.test", extra={"retries": 0})
        async with ScriptRunnerAsyncHook() as hook:
            with pytest.raises(ScriptRunnerTLSError) as info:
                await hook.health()
    assert proxy.requests[0][0] == "CONNECT sr.test:443 HTTP/1.1"  # through the proxy, as configured
    assert info.value.url == "https://sr.test/healthz" and info.value.may_have_reached_server is False
    assert "WRONG_VERSION_NUMBER" in str(info.value)  # the TLS library's own reason
    assert "pa55" not in str(info.value)


@pytest.mark.asyncio
async def test_proxy_from_the_environment(set_connection, backend, monkeypatch):
    async with LoopbackServer((200, job_body("j"))) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        set_connection(host="sr.test", port=8080)
        async with ScriptRunnerAsyncHook() as hook:
            await hook.get_job("j")
    assert proxy.requests[0][0] == "GET http://sr.test:8080/jobs/j HTTP/1.1"


def test_env_proxy_honours_no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "internal.test")
    assert env_proxy("https://sr.example:443") == "http://proxy.test:3128"
    assert env_proxy("https://internal.test:443") is None
    assert env_proxy("http://sr.example") is None


def test_unknown_client_library(set_connection, monkeypatch):
    set_connection(host="127.0.0.1", port=9)
    monkeypatch.setattr(ScriptRunnerAsyncHook, "http_client", "urllib")
    with pytest.raises(ValueError, match="http_client must be one of aiohttp, httpx"):
        asyncio.run(ScriptRunnerAsyncHook().get_backend())


@pytest.mark.asyncio
async def test_proxy_credentials_from_the_environment(set_connection, monkeypatch):
    async with LoopbackServer((200, job_body("j"))) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://user:pa55@127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        set_connection(host="sr.test", port=8080)
        async with ScriptRunnerAsyncHook() as hook:
            await hook.get_job("j")
    line, headers = proxy.requests[0]
    assert line == "GET http://sr.test:8080/jobs/j HTTP/1.1"
    assert headers["proxy-authorization"] == "Basic dXNlcjpwYTU1"
