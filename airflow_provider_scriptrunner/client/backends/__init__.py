"""
The HTTP libraries that carry the client's requests, one small class each, each with a declarative
map of its library's exceptions to the provider's errors (:func:`~..errors.translate`):

- :class:`~.requests_backend.RequestsBackend`: the sync hook's, one session per hook;
- :class:`~.aiohttp_backend.AiohttpBackend`: the async hook's default, shared per event loop and
  connection settings (:mod:`.pool`);
- :class:`~.httpx_backend.HttpxBackend`: the async hook's alternative, and the client over an
  injected transport (tests).

Every backend answers ``(status, text)`` for a :class:`~..api.Request`, or raises the provider's
error; what the answer means is decided in :mod:`~..api`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from airflow_provider_scriptrunner.client.api import Request
    from airflow_provider_scriptrunner.client.settings import ConnectionSettings


class AsyncBackend(Protocol):
    """What the async hook sends with."""

    #: The library's name: ``aiohttp`` or ``httpx``.
    name: str
    #: Its key in :mod:`.pool` when it is shared, else None.
    shared_key: tuple[Any, ...] | None

    @staticmethod
    def prepare(settings: ConnectionSettings) -> Any:
        """What building a client needs that may block (TLS context, imports); run in a worker thread."""

    async def send(self, request: Request) -> tuple[int, str]: ...

    async def close(self) -> None: ...
