"""
The async hook's HTTP clients, shared across triggers.

A triggerer runs thousands of triggers in one event loop. Each trigger's hook used to build its own
client (its own pool and TLS state); now every hook in a process that talks to the same server with
the same settings uses one client per event loop, with a bounded connection pool
(:data:`~airflow_provider_scriptrunner.constants.ASYNC_POOL_CONNECTIONS`). The client is created on
first use and closed when the last hook using it is closed (each hook counts once, from its first
request to its :meth:`~ScriptRunnerAsyncHook.close`, which a trigger calls in ``cleanup()``).

The shared client is an ``aiohttp.ClientSession`` by default: per request it costs a fraction of
what ``httpx`` costs (``benchmarks/RESULTS.md``: client CPU per request, and 10,000 triggers in one
process, side by side). ``httpx`` remains the client of a hook given a ``transport`` (the tests'
``httpx.MockTransport``) and can be chosen for the shared client with
``ScriptRunnerAsyncHook.http_client = "httpx"``. Both map failures to the same typed errors through
:mod:`~airflow_provider_scriptrunner.transport`, so the hook behaves the same on either.

Nothing here blocks the event loop: aiohttp's import (~0.2 s, done on first use, so that DAG
parsing and workers never pay for it), the TLS context (cached per process in
:func:`~airflow_provider_scriptrunner.transport.httpx_verify`) and the proxy from the environment
are done in a worker thread, once.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, cast
from urllib.parse import urlsplit

import httpx

from airflow_provider_scriptrunner import transport
from airflow_provider_scriptrunner.constants import ASYNC_POOL_CONNECTIONS

if TYPE_CHECKING:
    import aiohttp

    from airflow_provider_scriptrunner.settings import ConnectionSettings

#: What a hook's ``get_client()`` returns.
AsyncClient = Union["aiohttp.ClientSession", httpx.AsyncClient]
AIOHTTP = "aiohttp"
HTTPX = "httpx"
BACKENDS = (AIOHTTP, HTTPX)


@dataclass
class _Shared:
    client: AsyncClient
    users: int


#: (event loop, backend, settings key) -> the shared client and how many hooks hold it.
_shared: dict[tuple[Any, ...], _Shared] = {}
#: id(client) -> its key in ``_shared``.
_keys: dict[int, tuple[Any, ...]] = {}


def settings_key(settings: ConnectionSettings) -> tuple[Any, ...]:
    """Everything that goes into a client: hooks whose settings are equal share one."""
    return (
        settings.base_url,
        settings.timeout,
        settings.verify,
        tuple(sorted(settings.headers.items())),
        settings.auth_header,
    )


def env_proxy(url: str) -> str | None:
    """The proxy the environment (``HTTP_PROXY``/``HTTPS_PROXY``, ``NO_PROXY``) sets for ``url``, as httpx reads it."""
    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


def _aiohttp() -> Any:
    """The aiohttp module, once :func:`_prepare` has imported it."""
    return sys.modules["aiohttp"]


def _prepare(settings: ConnectionSettings, backend: str) -> tuple[Any, str | None]:
    """The TLS setting and (for aiohttp) the proxy of a new client; runs in a worker thread."""
    if backend == AIOHTTP:
        importlib.import_module("aiohttp")
        return transport.httpx_verify(settings.verify), env_proxy(settings.base_url)
    return transport.httpx_verify(settings.verify), None


def _build(backend: str, settings: ConnectionSettings, tls: Any, proxy: str | None) -> AsyncClient:
    if backend == HTTPX:
        return httpx.AsyncClient(
            headers=settings.request_headers(),
            verify=tls,
            timeout=settings.timeout,
            limits=httpx.Limits(
                max_connections=ASYNC_POOL_CONNECTIONS, max_keepalive_connections=ASYNC_POOL_CONNECTIONS
            ),
        )
    aio = _aiohttp()
    return aio.ClientSession(
        connector=aio.TCPConnector(limit=ASYNC_POOL_CONNECTIONS, ssl=tls),
        headers=settings.request_headers(),
        # httpx's one timeout covers connecting, waiting for a pooled connection and each read.
        timeout=aio.ClientTimeout(
            total=None, connect=settings.timeout, sock_connect=settings.timeout, sock_read=settings.timeout
        ),
        # One session serves many triggers: no cookies carried from one to the next (httpx kept
        # them per hook); the proxy is read from the environment once, as httpx does, instead of
        # on every request (trust_env=True would also read ~/.netrc, which httpx does not).
        cookie_jar=aio.DummyCookieJar(),
        trust_env=False,
        proxy=proxy,  # credentials in its URL become its Proxy-Authorization
    )


async def private_httpx(
    settings: ConnectionSettings, httpx_transport: httpx.AsyncBaseTransport
) -> AsyncClient:
    """A hook's own httpx client over an injected transport (not shared)."""
    tls, _ = await asyncio.to_thread(_prepare, settings, HTTPX)
    return httpx.AsyncClient(
        headers=settings.request_headers(), verify=tls, timeout=settings.timeout, transport=httpx_transport
    )


async def acquire(backend: str, settings: ConnectionSettings) -> AsyncClient:
    """The shared client of this event loop for ``settings``, created on first use; counts one more user."""
    if backend not in BACKENDS:
        raise ValueError(f"http_client must be one of {', '.join(BACKENDS)}, got {backend!r}")
    key = (asyncio.get_running_loop(), backend, *settings_key(settings))
    entry = _shared.get(key)
    if entry is None:
        prepared = await asyncio.to_thread(_prepare, settings, backend)
        entry = _shared.get(key)  # another hook may have created it meanwhile
        if entry is None:
            entry = _shared[key] = _Shared(_build(backend, settings, *prepared), 0)
            _keys[id(entry.client)] = key
    entry.users += 1
    return entry.client


async def release(client: AsyncClient) -> None:
    """One user fewer of a shared client (closed when it was the last); a client of its own is closed."""
    key = _keys.get(id(client))
    entry = _shared.get(key) if key is not None else None
    if key is None or entry is None or entry.client is not client:
        await _close(client)
        return
    entry.users -= 1
    if entry.users <= 0:
        # Forgotten before closing: a hook asking meanwhile gets a new client, never a closing one.
        del _shared[key], _keys[id(client)]
        await _close(client)


def shared_count() -> int:
    """How many shared clients are open in this process (for tests and benchmarks)."""
    return len(_shared)


def _is_aiohttp(client: AsyncClient) -> bool:
    aio = sys.modules.get("aiohttp")  # not imported: the client cannot be an aiohttp session
    return aio is not None and isinstance(client, aio.ClientSession)


async def _close(client: AsyncClient) -> None:
    if _is_aiohttp(client):
        await cast("aiohttp.ClientSession", client).close()
    else:
        await cast("httpx.AsyncClient", client).aclose()


async def send(client: AsyncClient, method: str, url: str, params: Any, timeout: float) -> tuple[int, str]:
    """One request: (status, body text), or the typed error for a failure (the same on either library)."""
    if _is_aiohttp(client):
        return await send_aiohttp(cast("aiohttp.ClientSession", client), method, url, params, timeout)
    return await send_httpx(cast("httpx.AsyncClient", client), method, url, params, timeout)


async def send_aiohttp(
    session: aiohttp.ClientSession, method: str, url: str, params: Any, timeout: float
) -> tuple[int, str]:
    """One request on an aiohttp session: (status, body text), or the typed error (as :func:`send_httpx`)."""
    aio = _aiohttp()
    try:
        # httpx does not follow redirects by default; neither does this.
        async with session.request(method, url, params=params, allow_redirects=False) as response:
            body = await response.read()
            return response.status, body.decode(response.charset or "utf-8", errors="replace")
    except aio.ConnectionTimeoutError:
        raise transport.connect_timeout(url, timeout) from None
    except (aio.ServerTimeoutError, asyncio.TimeoutError):
        raise transport.no_response(url, timeout) from None
    except aio.ClientSSLError as err:
        raise transport.tls_failure(url, str(err)) from None
    except aio.ClientConnectorError as err:
        raise transport.connect_failure(url, err) from None
    except aio.ClientError as err:
        raise transport.broken(url, f"{type(err).__name__}: {err}") from None


async def send_httpx(
    client: httpx.AsyncClient, method: str, url: str, params: Any, timeout: float
) -> tuple[int, str]:
    """One request on an httpx client: (status, body text), or the typed error."""
    try:
        response = await client.request(method, url, params=params)
    except httpx.ConnectTimeout:
        raise transport.connect_timeout(url, timeout) from None
    except httpx.TimeoutException:
        raise transport.no_response(url, timeout) from None
    except httpx.ConnectError as err:
        raise transport.connect_failure(url, err) from None
    except httpx.TransportError as err:
        raise transport.broken(url, f"{type(err).__name__}: {err}") from None
    return response.status_code, response.text
