"""
aiohttp for the async hook: the default, as it costs a fraction of httpx's CPU per request
(benchmarks/RESULTS.md). Imported only on a first async request, in a worker thread, so that DAG
parsing and workers never load it.
"""

from __future__ import annotations

import asyncio
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from airflow_provider_scriptrunner.client import errors
from airflow_provider_scriptrunner.client.settings import ssl_context

if TYPE_CHECKING:
    from airflow_provider_scriptrunner.client.api import Request
    from airflow_provider_scriptrunner.client.settings import ConnectionSettings

ERRORS: errors.ErrorMap = (
    (aiohttp.ConnectionTimeoutError, errors.connect_timeout),
    ((aiohttp.ServerTimeoutError, asyncio.TimeoutError), errors.no_response),
    (aiohttp.ClientSSLError, errors.tls_failure),
    (aiohttp.ClientConnectorError, errors.connect_failure),
    (aiohttp.ClientError, lambda request, err: errors.broken(request, errors.named(err))),
)


def env_proxy(url: str) -> str | None:
    """The proxy the environment (``HTTP_PROXY``/``HTTPS_PROXY``, ``NO_PROXY``) sets for ``url``, as httpx reads it."""
    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


class AiohttpBackend:
    """An ``aiohttp.ClientSession`` that behaves like the httpx client: same timeouts, no redirects, no cookies."""

    name = "aiohttp"

    def __init__(
        self, settings: ConnectionSettings, prepared: Any, *, connections: int | None = None
    ) -> None:
        tls, proxy = prepared
        self.shared_key: tuple[Any, ...] | None = None
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections or 0, ssl=tls),
            headers=settings.request_headers(),
            # httpx's one timeout covers connecting, waiting for a pooled connection and each read.
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=settings.timeout,
                sock_connect=settings.timeout,
                sock_read=settings.timeout,
            ),
            # One session serves many triggers: no cookies carried from one to the next; the proxy is
            # read from the environment once, as httpx does (trust_env=True would also read ~/.netrc).
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            proxy=proxy,  # credentials in its URL become its Proxy-Authorization
        )

    @staticmethod
    def prepare(settings: ConnectionSettings) -> Any:
        return ssl_context(settings.verify), env_proxy(settings.base_url)

    async def send(self, request: Request) -> tuple[int, str]:
        try:
            async with self.session.request(
                request.method, request.url, params=request.params, allow_redirects=False
            ) as response:
                body = await response.read()
                return response.status, body.decode(response.charset or "utf-8", errors="replace")
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise errors.translate(ERRORS, request, err) from None

    async def close(self) -> None:
        await self.session.close()
