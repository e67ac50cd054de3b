"""
The async clients shared across triggers.

A triggerer runs thousands of triggers in one event loop. Every async hook in a process that talks
to the same server with the same settings sends with one client per event loop, with a bounded
connection pool (:data:`ASYNC_POOL_CONNECTIONS`). The client is created on first use and closed
when the last hook holding it lets go (a hook holds it from its first request to its ``close()``,
which a trigger calls in ``cleanup()``).

Nothing here blocks the event loop: the backend's module (aiohttp's import takes ~0.2 s), the TLS
context and the proxy from the environment are loaded in a worker thread.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from airflow_provider_scriptrunner.client.backends import AsyncBackend
    from airflow_provider_scriptrunner.client.settings import ConnectionSettings

#: Connections per shared client: enough for thousands of triggers polling, bounded for the server.
ASYNC_POOL_CONNECTIONS = 64

#: The async libraries, by the name ``ScriptRunnerAsyncHook.http_client`` takes.
LIBRARIES = {
    "aiohttp": ("airflow_provider_scriptrunner.client.backends.aiohttp_backend", "AiohttpBackend"),
    "httpx": ("airflow_provider_scriptrunner.client.backends.httpx_backend", "HttpxBackend"),
}


@dataclass
class _Entry:
    backend: AsyncBackend
    users: int


#: (event loop, library, settings key) -> the shared client and how many hooks hold it.
_shared: dict[tuple[Any, ...], _Entry] = {}


def _load(library: str, settings: ConnectionSettings) -> tuple[Any, Any]:
    """The backend class of ``library`` and what building one needs; runs in a worker thread."""
    module, name = LIBRARIES[library]
    kind = getattr(importlib.import_module(module), name)
    return kind, kind.prepare(settings)


async def acquire(library: str, settings: ConnectionSettings) -> AsyncBackend:
    """The shared client of this event loop for ``settings``, created on first use; counts one more user."""
    if library not in LIBRARIES:
        raise ValueError(f"http_client must be one of {', '.join(LIBRARIES)}, got {library!r}")
    key = (asyncio.get_running_loop(), library, settings.key())
    entry = _shared.get(key)
    if entry is None:
        kind, prepared = await asyncio.to_thread(_load, library, settings)
        entry = _shared.get(key)  # another hook may have created it meanwhile
        if entry is None:
            backend = kind(settings, prepared, connections=ASYNC_POOL_CONNECTIONS)
            backend.shared_key = key
            entry = _shared[key] = _Entry(backend, 0)
    entry.users += 1
    return entry.backend


async def private(settings: ConnectionSettings, transport: httpx.AsyncBaseTransport) -> AsyncBackend:
    """A hook's own httpx client over an injected transport (not shared)."""
    kind, prepared = await asyncio.to_thread(_load, "httpx", settings)
    backend: AsyncBackend = kind(settings, prepared, transport=transport)
    return backend


async def release(backend: AsyncBackend) -> None:
    """One user fewer of a shared client (closed when it was the last); a client of its own is closed."""
    entry = _shared.get(backend.shared_key) if backend.shared_key is not None else None
    if entry is None or entry.backend is not backend:
        await backend.close()
        return
    entry.users -= 1
    if entry.users <= 0:
        # Forgotten before closing: a hook asking meanwhile gets a new client, never a closing one.
        del _shared[backend.shared_key]  # type: ignore[arg-type]
        await backend.close()


def shared_count() -> int:
    """How many shared clients are open in this process (for tests and benchmarks)."""
    return len(_shared)
