"""httpx for the async hook: chosen with ``ScriptRunnerAsyncHook.http_client = "httpx"``, or over an injected transport."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_scriptrunner.client import errors
from airflow_provider_scriptrunner.client.settings import ssl_context

if TYPE_CHECKING:
    from airflow_provider_scriptrunner.client.api import Request
    from airflow_provider_scriptrunner.client.settings import ConnectionSettings

ERRORS: errors.ErrorMap = (
    (httpx.ConnectTimeout, errors.connect_timeout),
    (httpx.TimeoutException, errors.no_response),
    (httpx.ConnectError, errors.connect_failure),
    (httpx.TransportError, lambda request, err: errors.broken(request, errors.named(err))),
)


class HttpxBackend:
    """
    An ``httpx.AsyncClient`` with the connection's headers, timeout and TLS setting.

    :param connections: the pool's bound (shared clients); ignored with a ``transport``.
    :param transport: an httpx transport to send over (``httpx.MockTransport`` in tests).
    """

    name = "httpx"

    def __init__(
        self,
        settings: ConnectionSettings,
        prepared: Any,
        *,
        connections: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.shared_key: tuple[Any, ...] | None = None
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(
            headers=settings.request_headers(),
            verify=prepared,
            timeout=settings.timeout,
            limits=limits,
            transport=transport,
        )

    @staticmethod
    def prepare(settings: ConnectionSettings) -> Any:
        return ssl_context(settings.verify)

    async def send(self, request: Request) -> tuple[int, str]:
        try:
            response = await self.client.request(request.method, request.url, params=request.params)
        except httpx.TransportError as err:
            raise errors.translate(ERRORS, request, err) from None
        return response.status_code, response.text

    async def close(self) -> None:
        await self.client.aclose()
