"""The async hook (triggers): the same endpoints as the sync hook, over a shared async client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import tenacity

from airflow_provider_scriptrunner import async_clients
from airflow_provider_scriptrunner.constants import DEFAULT_CONN_ID, MAX_LOG_PAGE_BYTES
from airflow_provider_scriptrunner.hooks._base import _ScriptRunnerHookBase, job_from
from airflow_provider_scriptrunner.log_paging import LogCursor, log_page, log_params
from airflow_provider_scriptrunner.settings import ConnectionSettings, aget_connection
from airflow_provider_scriptrunner.transport import (
    CANCEL,
    HEALTH,
    JOB,
    LOGS,
    Endpoint,
    describe_connection_failure,
    parse_response,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from airflow_provider_scriptrunner.models import LogChunk, LogPage, ScriptRunnerJob


class ScriptRunnerAsyncHook(_ScriptRunnerHookBase):
    """
    Async counterpart of :class:`ScriptRunnerHook` for triggers.

    Same semantics for get job, log page, whole-log iteration, cancel and health. Hooks in one
    process share one client per event loop and connection settings (an aiohttp session with a
    bounded pool, see :mod:`~airflow_provider_scriptrunner.async_clients`); a hook holds it from its
    first request until :meth:`close` (or ``async with``), and the last hook to let go closes it.

    :param transport: an httpx transport (``httpx.MockTransport`` in tests): the hook then uses an
        httpx client of its own over it.
    """

    #: The shared client's library: ``"aiohttp"`` (default) or ``"httpx"``.
    http_client: ClassVar[str] = async_clients.AIOHTTP

    def __init__(
        self,
        scriptrunner_conn_id: str = DEFAULT_CONN_ID,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scriptrunner_conn_id, **kwargs)
        self._transport = transport
        self._settings: ConnectionSettings | None = None
        self._client: async_clients.AsyncClient | None = None

    async def get_settings(self) -> ConnectionSettings:
        if self._settings is None:
            self._settings = self._settings_from(await aget_connection(self, self.scriptrunner_conn_id))
        return self._settings

    async def get_client(self) -> async_clients.AsyncClient:
        """The client this hook sends with: the shared one, or its own httpx client over ``transport``."""
        if self._client is not None:
            return self._client
        settings = await self.get_settings()
        if self._transport is not None:
            client = await async_clients.private_httpx(settings, self._transport)
        else:
            client = await async_clients.acquire(self.http_client, settings)
        return await self._adopt(client)

    async def _adopt(self, client: async_clients.AsyncClient) -> async_clients.AsyncClient:
        """Keep ``client``, unless a concurrent call of this hook got one first: then let go of it."""
        if self._client is None:
            self._client = client
            return client
        await async_clients.release(client)
        return self._client

    async def close(self) -> None:
        """Let go of the client (a shared one closes when its last hook lets go); harmless twice."""
        if self._client is not None:
            client, self._client = self._client, None
            await async_clients.release(client)

    async def __aenter__(self) -> ScriptRunnerAsyncHook:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(
        self, endpoint: Endpoint, *, job_id: str | None = None, params: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        settings = await self.get_settings()
        url = self._url(settings, endpoint, job_id)
        if self._attempts(settings) == 1:  # no retries (a trigger's own backoff): no retry machinery
            return await self._send(endpoint, url, params, settings.timeout)
        async for attempt in self._retrying(settings, endpoint, tenacity.AsyncRetrying):
            with attempt:
                return await self._send(endpoint, url, params, settings.timeout)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self, endpoint: Endpoint, url: str, params: Any, timeout: float
    ) -> tuple[int, dict[str, Any]]:
        client = await self.get_client()
        status, text = await async_clients.send(client, endpoint.method, url, params, timeout)
        return status, parse_response(status, text, method=endpoint.method, url=url)

    async def health(self) -> dict[str, Any]:
        return (await self._request(HEALTH))[1]

    async def get_job(self, job_id: str) -> ScriptRunnerJob:
        status, data = await self._request(JOB, job_id=job_id)
        return job_from(data, status, "GET", f"/jobs/{job_id}")

    async def cancel_job(self, job_id: str) -> ScriptRunnerJob:
        status, data = await self._request(CANCEL, job_id=job_id)
        return job_from(data, status, "POST", f"/jobs/{job_id}/cancel")

    async def get_log_page(
        self, job_id: str, stream: str = "stdout", offset: int = 0, limit: int | None = None
    ) -> LogPage:
        status, data = await self._request(LOGS, job_id=job_id, params=log_params(stream, offset, limit))
        return log_page(data, status, job_id)

    async def iter_log(
        self,
        job_id: str,
        stream: str = "stdout",
        offset: int = 0,
        *,
        page_size: int = MAX_LOG_PAGE_BYTES,
        max_bytes: int | None = None,
        stream_complete: bool = True,
    ) -> AsyncIterator[LogChunk]:
        """Async twin of :meth:`ScriptRunnerHook.iter_log`."""
        cursor = LogCursor(offset, page_size, max_bytes, stream_complete)
        while not cursor.done:
            chunk = cursor.accept(await self.get_log_page(job_id, stream, cursor.offset, cursor.next_limit()))
            if chunk is not None:
                yield chunk
            del chunk

    async def test_connection(self) -> tuple[bool, str]:
        try:
            await self._request(HEALTH)
        except Exception as err:  # noqa: BLE001
            return False, describe_connection_failure(err)
        return True, "script-runner is healthy"
