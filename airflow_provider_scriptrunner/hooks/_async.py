"""The async hook (triggers): the same endpoints as the sync hook, over a shared async client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import tenacity

from airflow_provider_scriptrunner.client import api
from airflow_provider_scriptrunner.client.backends import pool
from airflow_provider_scriptrunner.client.models import LogPage, ScriptRunnerJob
from airflow_provider_scriptrunner.client.paging import MAX_LOG_PAGE_BYTES, LogCursor, log_params
from airflow_provider_scriptrunner.hooks._base import (
    DEFAULT_CONN_ID,
    ScriptRunnerHookBase,
    describe_connection_failure,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import httpx

    from airflow_provider_scriptrunner.client.backends import AsyncBackend
    from airflow_provider_scriptrunner.client.models import LogChunk
    from airflow_provider_scriptrunner.client.settings import ConnectionSettings

T = TypeVar("T")


class ScriptRunnerAsyncHook(ScriptRunnerHookBase):
    """
    Async counterpart of :class:`~airflow_provider_scriptrunner.hooks.scriptrunner.ScriptRunnerHook` for triggers.

    Same semantics for get job, log page, whole-log iteration, cancel and health. Hooks in one
    process share one client per event loop and connection settings (an aiohttp session with a
    bounded pool, see :mod:`~airflow_provider_scriptrunner.client.backends.pool`); a hook holds it
    from its first request until :meth:`close` (or ``async with``), and the last hook to let go
    closes it.

    :param transport: an httpx transport (``httpx.MockTransport`` in tests): the hook then uses an
        httpx client of its own over it.
    """

    #: The shared client's library: ``"aiohttp"`` (default) or ``"httpx"``.
    http_client: ClassVar[str] = "aiohttp"

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
        self._backend: AsyncBackend | None = None

    async def get_settings(self) -> ConnectionSettings:
        if self._settings is None:
            self._settings = self._settings_from(await self._aget_connection())
        return self._settings

    async def _aget_connection(self) -> Any:
        """The connection, without blocking the event loop (Airflow 3.2+ has ``aget_connection``)."""
        aget = getattr(type(self), "aget_connection", None)
        if aget is not None:  # Airflow 3.2+
            return await aget(self.scriptrunner_conn_id)
        from asgiref.sync import sync_to_async

        return await sync_to_async(self.get_connection)(self.scriptrunner_conn_id)

    async def get_backend(self) -> AsyncBackend:
        """The client this hook sends with: the shared one, or its own httpx client over ``transport``."""
        if self._backend is not None:
            return self._backend
        settings = await self.get_settings()
        if self._transport is not None:
            backend = await pool.private(settings, self._transport)
        else:
            backend = await pool.acquire(self.http_client, settings)
        return await self._adopt(backend)

    async def _adopt(self, backend: AsyncBackend) -> AsyncBackend:
        """Keep ``backend``, unless a concurrent call of this hook got one first: then let go of it."""
        if self._backend is None:
            self._backend = backend
            return backend
        await pool.release(backend)
        return self._backend

    async def close(self) -> None:
        """Let go of the client (a shared one closes when its last hook lets go); harmless twice."""
        if self._backend is not None:
            backend, self._backend = self._backend, None
            await pool.release(backend)

    async def __aenter__(self) -> ScriptRunnerAsyncHook:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(
        self,
        endpoint: api.Endpoint,
        into: Callable[[dict[str, Any]], T],
        *,
        job_id: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> T:
        settings = await self.get_settings()
        request = api.Request(endpoint, endpoint.url(settings.base_url, job_id), settings.timeout, params)
        if self._attempts(settings) == 1:  # no retries (a trigger's own backoff): no retry machinery
            return await self._send(request, into)
        async for attempt in self._retrying(settings, endpoint, tenacity.AsyncRetrying):
            with attempt:
                return await self._send(request, into)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, request: api.Request, into: Callable[[dict[str, Any]], T]) -> T:
        status, text = await (await self.get_backend()).send(request)
        return api.parse(request, status, text, into)

    async def health(self) -> dict[str, Any]:
        return await self._request(api.HEALTH, dict)

    async def get_job(self, job_id: str) -> ScriptRunnerJob:
        return await self._request(api.JOB, ScriptRunnerJob.from_api, job_id=job_id)

    async def cancel_job(self, job_id: str) -> ScriptRunnerJob:
        return await self._request(api.CANCEL, ScriptRunnerJob.from_api, job_id=job_id)

    async def get_log_page(
        self, job_id: str, stream: str = "stdout", offset: int = 0, limit: int | None = None
    ) -> LogPage:
        return await self._request(
            api.LOGS, LogPage.from_api, job_id=job_id, params=log_params(stream, offset, limit)
        )

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
            await self.health()
        except Exception as err:  # noqa: BLE001
            return False, describe_connection_failure(err)
        return True, "script-runner is healthy"
