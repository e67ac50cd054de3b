"""
Hooks for script-runner: :class:`ScriptRunnerHook` (requests, one session per hook) and
:class:`ScriptRunnerAsyncHook` (for triggers: one aiohttp session shared per event loop and
connection settings, see :mod:`~airflow_provider_scriptrunner.async_clients`).

Every request goes through one funnel per hook (``_request``), which adds the base URL, auth,
timeouts, retries and error mapping; the public methods are one line per endpoint. The parts live
in their own modules: :mod:`~airflow_provider_scriptrunner.settings` (connection settings and base
URL), :mod:`~airflow_provider_scriptrunner.validation` (input checks),
:mod:`~airflow_provider_scriptrunner.transport` (endpoints, retry rules, error mapping) and
:mod:`~airflow_provider_scriptrunner.log_paging` (exact UTF-8 pages). The names they define are
importable from here too, as before.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

import requests
import tenacity

from airflow_provider_scriptrunner import transport, validation
from airflow_provider_scriptrunner.constants import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    DEFAULT_LOG_PAGE_BYTES,
    DEFAULT_PORT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    LOG_STREAMS,
    MAX_LOG_PAGE_BYTES,
    TRANSIENT_STATUS_CODES,
)
from airflow_provider_scriptrunner.exceptions import (
    ScriptRunnerApiError,
    ScriptRunnerConnectionError,
    ScriptRunnerResponseError,
)
from airflow_provider_scriptrunner.hooks._async import ScriptRunnerAsyncHook
from airflow_provider_scriptrunner.hooks._base import _ScriptRunnerHookBase, job_from
from airflow_provider_scriptrunner.log_paging import (
    LogCursor,
    PageTextReader,
    end_cut,
    exact_chunk,
    log_page,
    log_params,
    utf8_size,
)
from airflow_provider_scriptrunner.models import LogChunk, LogPage, ScriptRunnerJob
from airflow_provider_scriptrunner.settings import (
    USER_AGENT,
    ConnectionSettings,
    build_base_url,
)
from airflow_provider_scriptrunner.transport import (
    CANCEL,
    HEALTH,
    JOB,
    LOGS,
    MAY_HAVE_STARTED,
    RUN,
    Endpoint,
    describe_connection_failure,
    is_transient,
    parse_response,
)
from airflow_provider_scriptrunner.validation import (
    validate_args,
    validate_job_id,
    validate_script_id,
    validate_stream,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence


__all__ = [
    "CANCEL",
    "CONN_TYPE",
    "DEFAULT_CONN_ID",
    "DEFAULT_LOG_PAGE_BYTES",
    "DEFAULT_PORT",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "HEALTH",
    "JOB",
    "LOGS",
    "LOG_STREAMS",
    "MAX_LOG_PAGE_BYTES",
    "RUN",
    "TRANSIENT_STATUS_CODES",
    "USER_AGENT",
    "ConnectionSettings",
    "Endpoint",
    "LogCursor",
    "ScriptRunnerAsyncHook",
    "ScriptRunnerHook",
    "build_base_url",
    "describe_connection_failure",
    "exact_chunk",
    "is_transient",
    "parse_response",
    "validate_args",
    "validate_job_id",
    "validate_script_id",
    "validate_stream",
]


#: Bytes read off the socket at a time while :meth:`ScriptRunnerHook.copy_log` decodes a page.
STREAM_READ_BYTES = 4096


class ScriptRunnerHook(_ScriptRunnerHookBase):
    """
    Talks to a script-runner server over HTTP (requests, one session per hook).

    :param scriptrunner_conn_id: Airflow connection of type ``scriptrunner``.
    :param retries: attempts after the first for transient errors; overrides the connection's
        ``retries`` extra.
    """

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """
        Extra fields of the connection form, for Airflow 3.1.

        Airflow 3.2+ reads ``conn-fields`` from the provider info instead; both come from the one
        list :data:`airflow_provider_scriptrunner.CONN_FIELDS`. Defined on this class itself
        because Airflow only reads these methods from the hook class's own ``__dict__``.
        """
        from airflow_provider_scriptrunner.settings import connection_form_widgets

        return connection_form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabelled, hidden and placeholder fields of the connection form."""
        from airflow_provider_scriptrunner import UI_FIELD_BEHAVIOUR

        return UI_FIELD_BEHAVIOUR

    @cached_property
    def settings(self) -> ConnectionSettings:
        return self._settings_from(self.get_connection(self.scriptrunner_conn_id))

    @cached_property
    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers.update(self.settings.request_headers())
        session.verify = self.settings.verify
        return session

    def get_conn(self) -> requests.Session:
        return self.session

    def get_job_url(self, job_id: str) -> str:
        """URL of a job on the server (for links), from the settings the hook already resolved."""
        return self._url(self.settings, JOB, job_id)

    def close(self) -> None:
        if "session" in self.__dict__:
            self.session.close()
            del self.__dict__["session"]

    def __enter__(self) -> ScriptRunnerHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the funnel --------------------------------------------------------------------------

    def _request(
        self,
        endpoint: Endpoint,
        *,
        job_id: str | None = None,
        params: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None,
        timeout: Any = None,
    ) -> tuple[int, dict[str, Any]]:
        url = self._url(self.settings, endpoint, job_id)
        timeout = self.settings.timeout if timeout is None else timeout
        for attempt in self._retrying(self.settings, endpoint, tenacity.Retrying):
            with attempt:
                try:
                    return self._send(endpoint, url, params, json_body, timeout)
                except ScriptRunnerConnectionError as err:
                    if endpoint.starts_work and err.may_have_reached_server:
                        raise transport.not_sent_again(err) from None
                    raise
                except ScriptRunnerApiError as err:
                    if endpoint.starts_work and err.status_code >= 500:
                        # A 5xx (or a proxy's error page) may come after the script started.
                        err.args = (f"{err.args[0]}. {MAY_HAVE_STARTED}",)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self, endpoint: Endpoint, url: str, params: Any, json_body: Any, timeout: Any
    ) -> tuple[int, dict[str, Any]]:
        with self._mapped_errors(url, timeout):
            response = self.session.request(
                endpoint.method,
                url,
                params=params,
                json=json_body,
                timeout=timeout,
                verify=self.settings.verify,
            )
            status, text = response.status_code, response.text
            del (
                response
            )  # free the raw body: a log page is then in memory twice (text, parsed), not three times
        return status, parse_response(status, text, method=endpoint.method, url=url)

    @contextmanager
    def _mapped_errors(self, url: str, timeout: Any) -> Iterator[None]:
        """requests' failures, while sending or while reading the body, as the provider's errors."""
        try:
            yield
        except requests.exceptions.SSLError as err:
            raise transport.tls_failure(url, transport.root_message(err)) from None
        except requests.exceptions.ConnectTimeout:
            raise transport.connect_timeout(url, timeout) from None
        except requests.exceptions.ReadTimeout:
            raise transport.no_response(url, timeout) from None
        except requests.exceptions.ConnectionError as err:
            raise (
                transport.unreachable(url)
                if transport.never_sent(err)
                else transport.broken(url, transport.root_message(err))
            ) from None
        except requests.exceptions.RequestException as err:
            # ChunkedEncodingError and friends: the response body was cut off.
            raise ScriptRunnerConnectionError(
                url, f"response broken off ({transport.root_message(err)})", may_have_reached_server=True
            ) from None

    # -- endpoints ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """GET /healthz."""
        return self._request(HEALTH)[1]

    def run_script(
        self, script_id: str, args: Sequence[Any] | None = None, *, timeout: float | None = None
    ) -> ScriptRunnerJob:
        """
        Run a script in the server's sync mode and return the finished job.

        The HTTP response is held open for as long as the script runs: by default there is no
        read timeout (``timeout`` seconds sets one). Prefer :meth:`submit_script` for long
        scripts: a cut sync call leaves no job id to follow the script by.
        """
        body = {"scriptId": validate_script_id(script_id), "args": validate_args(args), "mode": "sync"}
        timeout = validation.positive_seconds("timeout", timeout)  # None: wait for the script
        status, data = self._request(RUN, json_body=body, timeout=(self.settings.timeout, timeout))
        return self._job(data, status, "POST", "/run")

    def submit_script(self, script_id: str, args: Sequence[Any] | None = None) -> str:
        """Start a script in async mode; return its job id at once."""
        body = {"scriptId": validate_script_id(script_id), "args": validate_args(args), "mode": "async"}
        status, data = self._request(RUN, json_body=body)
        job_id = data.get("jobId")
        if not isinstance(job_id, str) or not job_id:
            raise transport.malformed(
                ValueError("no jobId in the answer to an async run"),
                status,
                method="POST",
                url="/run",
                body=data,
            )
        return job_id

    def get_job(self, job_id: str) -> ScriptRunnerJob:
        """GET /jobs/{job_id}."""
        status, data = self._request(JOB, job_id=job_id)
        return self._job(data, status, "GET", f"/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> ScriptRunnerJob:
        """
        POST /jobs/{job_id}/cancel; returns the job as the server answered.

        A running job is answered still ``running``: it turns ``canceled`` when its process
        exits. Canceling a finished job changes nothing.
        """
        status, data = self._request(CANCEL, job_id=job_id)
        return self._job(data, status, "POST", f"/jobs/{job_id}/cancel")

    def get_log_page(
        self, job_id: str, stream: str = "stdout", offset: int = 0, limit: int | None = None
    ) -> LogPage:
        """One byte page of a log stream, as the server returns it."""
        params = log_params(stream, offset, limit)
        status, data = self._request(LOGS, job_id=job_id, params=params)
        return log_page(data, status, job_id)

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
        in one request, where 64 KiB pages take 16 and about twice as long; pass a smaller
        ``page_size`` to hold less at a time. Chunks are cut on character boundaries, so
        ``"".join(c.text for c in chunks)`` is the script's output byte for byte (up to the
        server's truncation, reported in ``LogChunk.truncated``). ``max_bytes`` stops after that
        many bytes. Pass ``stream_complete=False`` while the job still runs: a character cut at
        the current end is then held back, and the last chunk's ``next_offset`` is where to resume.
        """
        cursor = LogCursor(offset, page_size, max_bytes, stream_complete)
        while not cursor.done:
            chunk = cursor.accept(self.get_log_page(job_id, stream, cursor.offset, cursor.next_limit()))
            if chunk is not None:
                yield chunk
            del chunk  # do not hold the previous page while the next one is fetched

    def copy_log(
        self,
        job_id: str,
        write: Callable[[str], object],
        stream: str = "stdout",
        offset: int = 0,
        *,
        page_size: int = MAX_LOG_PAGE_BYTES,
        max_bytes: int | None = None,
        stream_complete: bool = True,
    ) -> Iterator[LogChunk]:
        """
        Pass a log stream from ``offset`` to ``write`` as it arrives, without ever holding a page whole.

        The same requests and the same exact text as :meth:`iter_log` (``write`` receives, in
        pieces, what its chunks' texts would hold), but each page's body is decoded as it comes off
        the socket, :data:`STREAM_READ_BYTES` at a time: memory is a few KiB whatever the page size.
        After each page this yields a :class:`LogChunk` with an empty ``text`` and the page's offsets
        (``next_offset`` is where to resume). A page cut off while it is read is read again and only
        the rest of it is written.
        """
        cursor = LogCursor(offset, page_size, max_bytes, stream_complete)
        while not cursor.done:
            chunk = self._copy_page(job_id, stream, cursor, write)
            if chunk is not None:
                yield chunk

    def _copy_page(
        self, job_id: str, stream: str, cursor: LogCursor, write: Callable[[str], object]
    ) -> LogChunk | None:
        params = log_params(stream, cursor.offset, cursor.next_limit())
        url = self._url(self.settings, LOGS, job_id)
        timeout = self.settings.timeout
        written = [0, 0]  # characters and UTF-8 bytes handed to write, over all attempts

        def hand(text: str) -> None:
            written[0] += len(text)
            written[1] += utf8_size(text)
            write(text)

        for attempt in self._retrying(self.settings, LOGS, tenacity.Retrying):
            with attempt:
                reader = PageTextReader(skip=written[0])  # a retry writes only the rest of the page
                with self._mapped_errors(url, timeout):
                    response = self.session.request(
                        "GET", url, params=params, timeout=timeout, verify=self.settings.verify, stream=True
                    )
                    with response:
                        status = response.status_code
                        if status != 200:
                            data = parse_response(status, response.text, method="GET", url=url)
                        else:
                            try:
                                for raw in response.iter_content(STREAM_READ_BYTES):
                                    for piece in reader.feed(raw):
                                        hand(piece)
                                fields = reader.fields()
                            except ValueError as err:  # not the JSON the API promises
                                raise ScriptRunnerResponseError(
                                    status, f"malformed response: {err}", method="GET", url=url
                                ) from None
                            data = parse_response(status, fields, method="GET", url=url)
        page = log_page(data, status, job_id)
        rest, last = reader.finish(page.data)
        for piece in rest:
            hand(piece)
        cut = end_cut(page, written[1], stream_complete=cursor.stream_complete) if last == "\ufffd" else 0
        if last and not cut:
            hand(last)
        if not cursor.advance(page, page.next_offset - cut):
            return None
        return LogChunk("", page.offset, page.next_offset - cut, page.total_size, page.truncated)

    def clone(self, *, retries: int | None = None) -> ScriptRunnerHook:
        """A hook on the same, already resolved connection with its own session (for ``on_kill``)."""
        twin = type(self)(self.scriptrunner_conn_id, retries=retries)
        twin.__dict__["settings"] = self.settings
        return twin

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection with GET /healthz; return (ok, message)."""
        try:
            url = self._url(self.settings, HEALTH, None)
            self._request(HEALTH)
        except Exception as err:  # noqa: BLE001 - the UI shows any failure as a message
            return False, describe_connection_failure(err)
        return True, f"script-runner at {url} is healthy"

    _job = staticmethod(job_from)
