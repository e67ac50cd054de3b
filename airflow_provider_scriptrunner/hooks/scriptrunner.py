"""
The hooks for script-runner: :class:`ScriptRunnerHook` (requests, one session per hook) and
:class:`ScriptRunnerAsyncHook` (for triggers, defined in :mod:`._async`; importable from here).

Every request of a hook goes through one funnel (``_request``), which builds the absolute URL,
adds auth and timeouts, retries what :func:`~airflow_provider_scriptrunner.client.api.is_transient`
allows, and returns the answer parsed into a model; the public methods are one call per endpoint.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from airflow_provider_scriptrunner.client import api, validation
from airflow_provider_scriptrunner.client.backends.requests_backend import RequestsBackend
from airflow_provider_scriptrunner.client.conn_fields import UI_FIELD_BEHAVIOUR
from airflow_provider_scriptrunner.client.models import LogChunk, LogPage, ScriptRunnerJob
from airflow_provider_scriptrunner.client.paging import MAX_LOG_PAGE_BYTES, LogCursor, log_params
from airflow_provider_scriptrunner.hooks._async import ScriptRunnerAsyncHook
from airflow_provider_scriptrunner.hooks._base import (
    ScriptRunnerHookBase,
    connection_form_widgets,
    describe_connection_failure,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from airflow_provider_scriptrunner.client.settings import ConnectionSettings

__all__ = ["ScriptRunnerAsyncHook", "ScriptRunnerHook"]

T = TypeVar("T")


class ScriptRunnerHook(ScriptRunnerHookBase):
    """
    Talks to a script-runner server over HTTP (requests, one session per hook).

    :param scriptrunner_conn_id: Airflow connection of type ``scriptrunner``.
    :param retries: attempts after the first for transient errors; overrides the connection's
        ``retries`` extra.
    """

    # Airflow reads these two from the hook class's own __dict__.
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form, for Airflow 3.1 (3.2+ reads ``conn-fields`` from the provider info)."""
        return connection_form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabelled, hidden and placeholder fields of the connection form."""
        return UI_FIELD_BEHAVIOUR

    @cached_property
    def settings(self) -> ConnectionSettings:
        return self._settings_from(self.get_connection(self.scriptrunner_conn_id))

    @cached_property
    def backend(self) -> RequestsBackend:
        return RequestsBackend(self.settings)

    def get_conn(self) -> Any:
        """The requests session the hook sends with."""
        return self.backend.session

    def get_job_url(self, job_id: str) -> str:
        """URL of a job on the server (for links)."""
        return api.JOB.url(self.settings.base_url, job_id)

    def close(self) -> None:
        if "backend" in self.__dict__:
            self.__dict__.pop("backend").close()

    def __enter__(self) -> ScriptRunnerHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clone(self, *, retries: int | None = None) -> ScriptRunnerHook:
        """A hook on the same, already resolved connection with its own session (for ``on_kill``)."""
        twin = type(self)(self.scriptrunner_conn_id, retries=retries)
        twin.__dict__["settings"] = self.settings
        return twin

    # -- the funnel --------------------------------------------------------------------------

    def _request(
        self,
        endpoint: api.Endpoint,
        into: Callable[[dict[str, Any]], T],
        *,
        job_id: str | None = None,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        timeout: Any = None,
    ) -> T:
        request = api.Request(
            endpoint,
            endpoint.url(self.settings.base_url, job_id),
            self.settings.timeout if timeout is None else timeout,
            params,
            body,
        )
        for attempt in self._retrying(self.settings, endpoint, tenacity.Retrying):
            with attempt:
                status, text = self.backend.send(request)
                return api.parse(request, status, text, into)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- endpoints ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """GET /healthz."""
        return self._request(api.HEALTH, dict)

    def run_script(
        self, script_id: str, args: Sequence[Any] | None = None, *, timeout: float | None = None
    ) -> ScriptRunnerJob:
        """
        Run a script in the server's sync mode and return the finished job.

        The HTTP response is held open for as long as the script runs: by default there is no
        read timeout (``timeout`` seconds sets one). Prefer :meth:`submit_script` for long
        scripts: a cut sync call leaves no job id to follow the script by.
        """
        body = api.run_body(script_id, args, "sync")
        read_timeout = validation.positive_seconds("timeout", timeout)  # None: wait for the script
        return self._request(
            api.RUN, ScriptRunnerJob.from_api, body=body, timeout=(self.settings.timeout, read_timeout)
        )

    def submit_script(self, script_id: str, args: Sequence[Any] | None = None) -> str:
        """Start a script in async mode; return its job id at once."""
        return self._request(api.RUN, api.submitted_job_id, body=api.run_body(script_id, args, "async"))

    def get_job(self, job_id: str) -> ScriptRunnerJob:
        """GET /jobs/{job_id}."""
        return self._request(api.JOB, ScriptRunnerJob.from_api, job_id=job_id)

    def cancel_job(self, job_id: str) -> ScriptRunnerJob:
        """
        POST /jobs/{job_id}/cancel; returns the job as the server answered.

        A running job is answered still ``running``: it turns ``canceled`` when its process
        exits. Canceling a finished job changes nothing.
        """
        return self._request(api.CANCEL, ScriptRunnerJob.from_api, job_id=job_id)

    def get_log_page(
        self, job_id: str, stream: str = "stdout", offset: int = 0, limit: int | None = None
    ) -> LogPage:
        """One byte page of a log stream, as the server returns it."""
        return self._request(
            api.LOGS, LogPage.from_api, job_id=job_id, params=log_params(stream, offset, limit)
        )

    def iter_log(
        self,
        job_id: str,
        stream: str = "stdout",
        offset: int = 0,
        *,
        page_size: int = MAX_LOG_PAGE_BYTES,
        max_bytes: int | None = None,
        stream_complete: bool = True,
    ) -> Iterator[LogChunk]:
        """
        Yield the whole of a log stream from ``offset``, one page at a time, as exact text.

        Memory stays bounded by ``page_size``. The default, the server's largest page (1 MiB),
        reads a whole stream as the server keeps it by default (``maxLogBytesPerStream``, 1 MiB)
        in one request; pass a smaller ``page_size`` to hold less at a time. Chunks are cut on
        character boundaries, so ``"".join(c.text for c in chunks)`` is the script's output byte
        for byte (up to the server's truncation, reported in ``LogChunk.truncated``). ``max_bytes``
        stops after that many bytes. Pass ``stream_complete=False`` while the job still runs: a
        character cut at the current end is then held back, and the last chunk's ``next_offset``
        is where to resume.
        """
        cursor = LogCursor(offset, page_size, max_bytes, stream_complete)
        while not cursor.done:
            chunk = cursor.accept(self.get_log_page(job_id, stream, cursor.offset, cursor.next_limit()))
            if chunk is not None:
                yield chunk
            del chunk  # do not hold the previous page while the next one is fetched

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection with GET /healthz; return (ok, message)."""
        try:
            url = api.HEALTH.url(self.settings.base_url)
            self.health()
        except Exception as err:  # noqa: BLE001 - the UI shows any failure as a message
            return False, describe_connection_failure(err)
        return True, f"script-runner at {url} is healthy"
