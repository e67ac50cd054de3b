"""
Hooks for script-runner: the only module of the provider that speaks HTTP.

Every request goes through one funnel per hook (``_request``), which adds the base URL, auth,
timeouts, retries and error mapping. The endpoints are data (:data:`ENDPOINTS`), so the API
surface reads at a glance. :class:`ScriptRunnerHook` uses one ``requests.Session``;
:class:`ScriptRunnerAsyncHook` (for triggers) one ``httpx.AsyncClient``.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import requests
import tenacity
import urllib3.exceptions
from airflow.sdk import BaseHook

from airflow_provider_scriptrunner.exceptions import (
    JOB_NOT_FOUND,
    ScriptRunnerApiError,
    ScriptRunnerAuthError,
    ScriptRunnerConfigError,
    ScriptRunnerConnectionError,
    ScriptRunnerError,
    ScriptRunnerJobNotFoundError,
    ScriptRunnerResponseError,
    ScriptRunnerTimeoutError,
    ScriptRunnerTLSError,
)
from airflow_provider_scriptrunner.models import LogChunk, LogPage, ScriptRunnerJob

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "scriptrunner_default"
CONN_TYPE = "scriptrunner"
DEFAULT_PORT = 8080
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
#: Bytes per log request; the server's default page size.
DEFAULT_LOG_PAGE_BYTES = 65536
#: The server caps a log page at this many bytes.
MAX_LOG_PAGE_BYTES = 1048576
LOG_STREAMS = ("stdout", "stderr")
TRANSIENT_STATUS_CODES = frozenset({429, 502, 503, 504})
_REPLACEMENT = "\ufffd"
#: Backoff between attempts: exponential with jitter, capped (module-level so tests can shorten it).
RETRY_WAIT = tenacity.wait_exponential_jitter(multiplier=0.5, max=10, jitter=0.5)


# --------------------------------------------------------------------------------------------
# Endpoints


@dataclass(frozen=True)
class Endpoint:
    """
    One route of the script-runner API.

    :param starts_work: True when sending the request twice would run a script twice; such a
        request is retried only when it certainly never reached the server.
    """

    method: str
    path: str
    starts_work: bool = False


ENDPOINTS = {
    "health": Endpoint("GET", "/healthz"),
    "run": Endpoint("POST", "/run", starts_work=True),
    "job": Endpoint("GET", "/jobs/{job_id}"),
    "logs": Endpoint("GET", "/jobs/{job_id}/logs"),
    "cancel": Endpoint("POST", "/jobs/{job_id}/cancel"),
}


def is_transient(error: BaseException, endpoint: Endpoint) -> bool:
    """Whether ``error`` is worth another try of ``endpoint``: the one place retry rules live."""
    if isinstance(error, ScriptRunnerConnectionError):
        return not (endpoint.starts_work and error.may_have_reached_server)
    if isinstance(error, ScriptRunnerApiError) and not endpoint.starts_work:
        return error.status_code in TRANSIENT_STATUS_CODES
    return False


# --------------------------------------------------------------------------------------------
# Input validation (before any request)


def _require_text(name: str, value: Any, example: str, empty_hint: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string such as {example!r}, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} is empty: {empty_hint}")
    return value


def validate_script_id(script_id: Any) -> str:
    return _require_text("script_id", script_id, "quick-echo", "give the id of a script in the server's scripts.json")


def validate_args(args: Any) -> list[str]:
    """Return ``args`` as a list of strings; numbers are converted with ``str()``."""
    if args is None:
        return []
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
        raise TypeError(
            f"args must be a list or tuple of strings, got {type(args).__name__}"
            + (": wrap a single argument in a list, e.g. args=['value']" if isinstance(args, str) else "")
        )
    result = []
    for index, item in enumerate(args):
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    # A lone surrogate cannot reach a process as text: the server would fail or mangle it.
                    raise ValueError(f"args[{index}] is not valid Unicode text (it holds a lone surrogate): {item!r:.80}") from None
            result.append(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            result.append(str(item))
        else:
            raise TypeError(f"args[{index}] must be a string (or a number), got {type(item).__name__}: {item!r:.80}")
    return result


def validate_job_id(job_id: Any) -> str:
    _require_text("job_id", job_id, "job_1795342284509_3", "pass the job id returned when the script was submitted")
    if job_id.strip() in (".", ".."):
        # Dot segments would be folded away by URL normalisation and hit another route.
        raise ValueError(f"job_id {job_id!r} is not a job id")
    return job_id


def validate_stream(stream: Any) -> str:
    if stream not in LOG_STREAMS:
        raise ValueError(f"stream must be 'stdout' or 'stderr', got {stream!r}")
    return stream


def _validate_non_negative(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer number of bytes, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _validate_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    _validate_non_negative("limit", limit)
    if not 1 <= limit <= MAX_LOG_PAGE_BYTES:
        raise ValueError(f"limit must be between 1 and {MAX_LOG_PAGE_BYTES} bytes, got {limit}")
    return limit


def _validate_page_size(page_size: Any) -> int:
    _validate_non_negative("page_size", page_size)
    if not 4 <= page_size <= MAX_LOG_PAGE_BYTES:
        # A page must be able to hold one whole UTF-8 character (up to 4 bytes).
        raise ValueError(f"page_size must be between 4 and {MAX_LOG_PAGE_BYTES} bytes, got {page_size}")
    return page_size


# --------------------------------------------------------------------------------------------
# Connection settings


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    raise ScriptRunnerConfigError(f"connection extra {name!r} must be true or false, got {value!r}")


def _parse_number(name: str, value: Any, kind: type, minimum: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ScriptRunnerConfigError(f"connection extra {name!r} must be a number, got {value!r}") from None
    if number < minimum:
        raise ScriptRunnerConfigError(f"connection extra {name!r} must be >= {minimum}, got {value!r}")
    return number


@dataclass(frozen=True)
class ConnectionSettings:
    """
    Everything a request needs, derived from an Airflow connection of type ``scriptrunner``.

    ``auth_header`` holds the credential and is kept out of ``repr``.
    """

    base_url: str
    timeout: float = DEFAULT_TIMEOUT
    verify: bool | str = True
    headers: dict[str, str] = field(default_factory=dict)
    retries: int = DEFAULT_RETRIES
    auth_header: str | None = field(default=None, repr=False)

    @classmethod
    def from_connection(cls, conn: Any) -> ConnectionSettings:
        extra = _plain_extra(conn.extra_dejson or {})
        return cls(
            base_url=build_base_url(conn.host, conn.port, conn.schema),
            timeout=_parse_number("timeout", extra.get("timeout", DEFAULT_TIMEOUT), float, 0.001),
            verify=_verify_from_extra(extra),
            headers=_headers_from_extra(extra),
            retries=_parse_number("retries", extra.get("retries", DEFAULT_RETRIES), int, 0),
            auth_header=_auth_header(conn.login, conn.password),
        )

    def request_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", **self.headers}
        if self.auth_header:
            headers["Authorization"] = self.auth_header
        return headers


def build_base_url(host: str | None, port: int | None, schema: str | None) -> str:
    """
    Base URL from the connection's host, port and schema.

    ``host`` is a bare host (``localhost``) or a full base URL (``https://proxy/prefix``).
    ``schema`` is ``http``/``https``; any other value is a path prefix, which is where the URI
    form (``scriptrunner://:token@proxy.example:443/prefix``) puts the path.
    """
    host = (host or "").strip()
    if not host:
        raise ScriptRunnerConfigError(
            "the script-runner connection has no host: set Host to e.g. 'localhost' or 'https://proxy.example/prefix'"
        )
    schema = (schema or "").strip().strip("/")
    scheme_from_schema = schema.lower() if schema.lower() in ("http", "https") else ""
    prefix_from_schema = "" if scheme_from_schema or not schema else "/" + schema
    if "://" in host:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ScriptRunnerConfigError(f"connection host {host!r} is not an http(s) URL")
        scheme = parts.scheme
        hostname = parts.hostname
        port = port or parts.port
        path = parts.path.rstrip("/") or prefix_from_schema
    else:
        hostname, _, path = host.partition("/")
        path = ("/" + path.strip("/")) if path.strip("/") else prefix_from_schema
        if hostname.count(":") == 1:  # host:port (an IPv6 address has several colons)
            hostname, _, host_port = hostname.partition(":")
            if not host_port.isdigit():
                raise ScriptRunnerConfigError(f"connection host {host!r} has a port that is not a number")
            port = port or int(host_port)
        scheme = scheme_from_schema or ("https" if port == 443 else "http")
        port = port or DEFAULT_PORT
    if ":" in hostname and not hostname.startswith("["):
        hostname = f"[{hostname}]"  # IPv6 literal
    netloc = hostname if port is None else f"{hostname}:{port}"
    return f"{scheme}://{netloc}{path.rstrip('/')}"


def _plain_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """Accept extras saved with the UI's ``extra__scriptrunner__`` prefix as well as plain keys."""
    prefix = f"extra__{CONN_TYPE}__"
    plain = {k[len(prefix):]: v for k, v in extra.items() if k.startswith(prefix) and v not in (None, "")}
    plain.update({k: v for k, v in extra.items() if not k.startswith(prefix) and v is not None})
    return plain


def _verify_from_extra(extra: dict[str, Any]) -> bool | str:
    ca_bundle = extra.get("ca_bundle") or (extra["verify"] if isinstance(extra.get("verify"), str) else None)
    if ca_bundle and str(ca_bundle).strip().lower() not in ("true", "false"):
        return str(ca_bundle)
    return _parse_bool("verify_ssl", extra.get("verify_ssl", extra.get("verify", True)))


def _headers_from_extra(extra: dict[str, Any]) -> dict[str, str]:
    headers = extra.get("headers") or {}
    if isinstance(headers, str):
        try:
            headers = json.loads(headers) if headers.strip() else {}
        except ValueError:
            raise ScriptRunnerConfigError(
                'connection extra "headers" must be a JSON object such as {"X-Team": "data"}'
            ) from None
    if not isinstance(headers, dict):
        raise ScriptRunnerConfigError(f'connection extra "headers" must be a JSON object, got {type(headers).__name__}')
    return {str(k): str(v) for k, v in headers.items()}


def _auth_header(login: str | None, password: str | None) -> str | None:
    if password and login:
        return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
    if password:
        return f"Bearer {password}"
    if login:
        raise ScriptRunnerConfigError(
            "the script-runner connection has a login but no password: set Password too (HTTP Basic), "
            "or put an API token in Password and leave Login empty"
        )
    return None


# --------------------------------------------------------------------------------------------
# Responses


def parse_response(status: int, text: str, *, method: str, url: str) -> dict[str, Any]:
    """Return the JSON body of a successful response, or raise the matching error."""
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if status >= 400 or (isinstance(body, dict) and body.get("ok") is False):
        if isinstance(error, dict):
            code = error.get("code")
            message = str(error.get("message") or "")
            if status in (401, 403):
                raise ScriptRunnerAuthError(status, code, message, method=method, url=url)
            if code == JOB_NOT_FOUND:
                raise ScriptRunnerJobNotFoundError(status, code, message, method=method, url=url)
            raise ScriptRunnerApiError(status, code, message, method=method, url=url)
        if status in (401, 403):
            raise ScriptRunnerAuthError(
                status,
                None,
                "authentication rejected: check the connection's Password (API token) or Login/Password",
                method=method,
                url=url,
            )
        if status == 404:
            raise ScriptRunnerResponseError(
                status,
                "this URL is not a script-runner API (404 without a script-runner error body): check Host, Port and the path prefix",
                method=method,
                url=url,
                body=text,
            )
        raise ScriptRunnerResponseError(status, "error response that is not script-runner JSON", method=method, url=url, body=text)
    if not isinstance(body, dict):
        raise ScriptRunnerResponseError(
            status,
            "response body is not a JSON object" if body is None else "response JSON is not an object",
            method=method,
            url=url,
            body=text,
        )
    return body


def _malformed(error: ValueError, status: int, *, method: str, url: str, body: dict[str, Any]) -> ScriptRunnerResponseError:
    return ScriptRunnerResponseError(status, f"malformed response: {error}", method=method, url=url, body=json.dumps(body))


def exact_chunk(page: LogPage, *, stream_complete: bool) -> LogChunk:
    """
    The exact text of a page, cut back to the last whole character.

    The server decodes each byte page on its own, so a page ending inside a multi-byte
    character ends in U+FFFD. Such a page is returned without that character and with
    ``next_offset`` moved back to where the character starts, so the next page begins on a
    character boundary. At the very end of a finished stream (or a truncated one) the text
    is returned as the server has it.
    """
    span = page.next_offset - page.offset
    text = page.data
    at_end = page.next_offset >= page.total_size
    if span > 0 and text.endswith(_REPLACEMENT) and not (at_end and stream_complete):
        cut = span - len(text[:-1].encode("utf-8"))
        if 1 <= cut <= 3:
            return LogChunk(text[:-1], page.offset, page.next_offset - cut, page.total_size, page.truncated)
    return LogChunk(text, page.offset, page.next_offset, page.total_size, page.truncated)


class LogCursor:
    """
    Walks a log stream page by page; shared by the sync and async whole-stream iterations.

    :param offset: byte offset to start at (a character boundary).
    :param page_size: bytes per request.
    :param max_bytes: stop after this many bytes (None: read to the current end).
    :param stream_complete: the job has ended, so a character cut at the end is final.
    """

    def __init__(self, offset: int, page_size: int, max_bytes: int | None, stream_complete: bool) -> None:
        self.offset = _validate_non_negative("offset", offset)
        self.page_size = _validate_page_size(page_size)
        self.remaining = None if max_bytes is None else _validate_non_negative("max_bytes", max_bytes)
        self.stream_complete = stream_complete
        self.done = self.remaining == 0

    def next_limit(self) -> int:
        return self.page_size if self.remaining is None else min(self.page_size, self.remaining)

    def accept(self, page: LogPage) -> LogChunk | None:
        """Take a page; return its exact chunk, or None when there is nothing more to read."""
        chunk = exact_chunk(page, stream_complete=self.stream_complete)
        if chunk.next_offset <= self.offset:
            self.done = True
            return None
        consumed = chunk.next_offset - self.offset
        self.offset = chunk.next_offset
        if self.remaining is not None:
            self.remaining -= consumed
        self.done = page.next_offset >= page.total_size or self.remaining == 0
        return chunk


# --------------------------------------------------------------------------------------------
# Hooks


class _ScriptRunnerHookBase(BaseHook):
    """What the sync and async hooks share: connection, URL building, connection form."""

    conn_name_attr = "scriptrunner_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Script Runner"

    def __init__(self, scriptrunner_conn_id: str = DEFAULT_CONN_ID, *, retries: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(scriptrunner_conn_id, str) or not scriptrunner_conn_id:
            raise ValueError("scriptrunner_conn_id must be a non-empty connection id such as 'scriptrunner_default'")
        if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
            raise ValueError(f"retries must be an int >= 0 (attempts after the first), or None for the connection's, got {retries!r}")
        self.scriptrunner_conn_id = scriptrunner_conn_id
        self._retries_override = retries

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scriptrunner_conn_id={self.scriptrunner_conn_id!r})"

    def _settings_from(self, conn: Any) -> ConnectionSettings:
        if conn.conn_type and conn.conn_type != CONN_TYPE:
            self.log.warning("Connection %r has type %r, expected %r", self.scriptrunner_conn_id, conn.conn_type, CONN_TYPE)
        return ConnectionSettings.from_connection(conn)

    def _url(self, settings: ConnectionSettings, endpoint: Endpoint, job_id: str | None) -> str:
        path = endpoint.path
        if "{job_id}" in path:
            path = path.format(job_id=quote(validate_job_id(job_id), safe=""))
        return settings.base_url + path

    def _retrying(self, settings: ConnectionSettings, endpoint: Endpoint, kind: type) -> Any:
        attempts = (self._retries_override if self._retries_override is not None else settings.retries) + 1
        return kind(
            stop=tenacity.stop_after_attempt(attempts),
            wait=RETRY_WAIT,
            retry=tenacity.retry_if_exception(lambda err: is_transient(err, endpoint)),
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        self.log.warning(
            "script-runner request failed (attempt %d), retrying in %.1f s: %s",
            state.attempt_number,
            state.next_action.sleep if state.next_action else 0,
            error,
        )

    def get_job_url(self, job_id: str) -> str:
        """URL of a job on the server (for links)."""
        conn = self.get_connection(self.scriptrunner_conn_id)
        return self._url(ConnectionSettings.from_connection(conn), ENDPOINTS["job"], job_id)


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

        Airflow 3.2+ reads ``conn-fields`` from the provider info instead. Defined on this class
        itself because Airflow only reads these methods from the hook class's own ``__dict__``.
        """
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, IntegerField, StringField
        from wtforms.validators import NumberRange, Optional

        return {
            "timeout": StringField(lazy_gettext("Request timeout (seconds)"), widget=BS3TextFieldWidget()),
            "verify_ssl": BooleanField(lazy_gettext("Verify TLS certificate"), default=True),
            "ca_bundle": StringField(lazy_gettext("CA bundle path"), widget=BS3TextFieldWidget()),
            "headers": StringField(lazy_gettext("Extra HTTP headers (JSON object)"), widget=BS3TextFieldWidget()),
            "retries": IntegerField(
                lazy_gettext("Retry attempts for transient errors"),
                validators=[Optional(), NumberRange(min=0)],
                widget=BS3TextFieldWidget(),
                default=DEFAULT_RETRIES,
            ),
        }

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
        name: str,
        *,
        job_id: str | None = None,
        params: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None,
        timeout: Any = None,
    ) -> tuple[int, dict[str, Any]]:
        endpoint = ENDPOINTS[name]
        url = self._url(self.settings, endpoint, job_id)
        timeout = self.settings.timeout if timeout is None else timeout
        for attempt in self._retrying(self.settings, endpoint, tenacity.Retrying):
            with attempt:
                try:
                    return self._send(endpoint, url, params, json_body, timeout)
                except ScriptRunnerConnectionError as err:
                    if endpoint.starts_work and err.may_have_reached_server:
                        raise _not_sent_again(err) from None
                    raise
                except ScriptRunnerApiError as err:
                    if endpoint.starts_work and err.status_code >= 500:
                        # A 5xx (or a proxy's error page) may come after the script started.
                        err.args = (f"{err.args[0]}. {MAY_HAVE_STARTED}",)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, endpoint: Endpoint, url: str, params: Any, json_body: Any, timeout: Any) -> tuple[int, dict[str, Any]]:
        try:
            response = self.session.request(
                endpoint.method, url, params=params, json=json_body, timeout=timeout, verify=self.settings.verify
            )
            status, text = response.status_code, response.text
            del response  # free the raw body: a log page is then in memory twice (text, parsed), not three times
        except requests.exceptions.SSLError as err:
            raise _tls_failure(url, _root_message(err)) from None
        except requests.exceptions.ConnectTimeout:
            raise _connect_timeout(url, timeout) from None
        except requests.exceptions.ReadTimeout:
            raise _no_response(url, timeout) from None
        except requests.exceptions.ConnectionError as err:
            raise (_unreachable(url) if _never_sent(err) else _broken(url, _root_message(err))) from None
        except requests.exceptions.RequestException as err:
            # ChunkedEncodingError and friends: the response body was cut off.
            raise ScriptRunnerConnectionError(url, f"response broken off ({_root_message(err)})", may_have_reached_server=True) from None
        return status, parse_response(status, text, method=endpoint.method, url=url)

    # -- endpoints ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """GET /healthz."""
        return self._request("health")[1]

    def run_script(self, script_id: str, args: Sequence[Any] | None = None, *, timeout: float | None = None) -> ScriptRunnerJob:
        """
        Run a script in the server's sync mode and return the finished job.

        The HTTP response is held open for as long as the script runs: by default there is no
        read timeout (``timeout`` seconds sets one). Prefer :meth:`submit_script` for long
        scripts: a cut sync call leaves no job id to follow the script by.
        """
        body = {"scriptId": validate_script_id(script_id), "args": validate_args(args), "mode": "sync"}
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, or None to wait for the script, got {timeout!r}")
        status, data = self._request("run", json_body=body, timeout=(self.settings.timeout, timeout))
        return self._job(data, status, "POST", "/run")

    def submit_script(self, script_id: str, args: Sequence[Any] | None = None) -> str:
        """Start a script in async mode; return its job id at once."""
        body = {"scriptId": validate_script_id(script_id), "args": validate_args(args), "mode": "async"}
        status, data = self._request("run", json_body=body)
        job_id = data.get("jobId")
        if not isinstance(job_id, str) or not job_id:
            raise _malformed(ValueError("no jobId in the answer to an async run"), status, method="POST", url="/run", body=data)
        return job_id

    def get_job(self, job_id: str) -> ScriptRunnerJob:
        """GET /jobs/{job_id}."""
        status, data = self._request("job", job_id=job_id)
        return self._job(data, status, "GET", f"/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> ScriptRunnerJob:
        """
        POST /jobs/{job_id}/cancel; returns the job as the server answered.

        A running job is answered still ``running``: it turns ``canceled`` when its process
        exits. Canceling a finished job changes nothing.
        """
        status, data = self._request("cancel", job_id=job_id)
        return self._job(data, status, "POST", f"/jobs/{job_id}/cancel")

    def get_log_page(self, job_id: str, stream: str = "stdout", offset: int = 0, limit: int | None = None) -> LogPage:
        """One byte page of a log stream, as the server returns it."""
        params = _log_params(stream, offset, limit)
        status, data = self._request("logs", job_id=job_id, params=params)
        return _log_page(data, status, job_id)

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

    def clone(self, *, retries: int | None = None) -> ScriptRunnerHook:
        """A hook on the same, already resolved connection with its own session (for ``on_kill``)."""
        twin = type(self)(self.scriptrunner_conn_id, retries=retries)
        twin.__dict__["settings"] = self.settings
        return twin

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection with GET /healthz; return (ok, message)."""
        try:
            url = self._url(self.settings, ENDPOINTS["health"], None)
            self._request("health")
        except Exception as err:  # noqa: BLE001 - the UI shows any failure as a message
            return False, describe_connection_failure(err)
        return True, f"script-runner at {url} is healthy"

    @staticmethod
    def _job(data: dict[str, Any], status: int, method: str, url: str) -> ScriptRunnerJob:
        try:
            return ScriptRunnerJob.from_api(data)
        except ValueError as err:
            raise _malformed(err, status, method=method, url=url, body=data) from None


class ScriptRunnerAsyncHook(_ScriptRunnerHookBase):
    """
    Async counterpart of :class:`ScriptRunnerHook` for triggers (httpx, one client per hook).

    Same semantics for get job, log page, whole-log iteration, cancel and health. Close it
    with :meth:`close` (or ``async with``).
    """

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
        self._client: httpx.AsyncClient | None = None

    async def get_settings(self) -> ConnectionSettings:
        if self._settings is None:
            self._settings = self._settings_from(await _aget_connection(self, self.scriptrunner_conn_id))
        return self._settings

    async def get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            settings = await self.get_settings()
            self._client = httpx.AsyncClient(
                headers=settings.request_headers(),
                verify=_httpx_verify(settings.verify),
                timeout=settings.timeout,
                transport=self._transport,
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def __aenter__(self) -> ScriptRunnerAsyncHook:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(self, name: str, *, job_id: str | None = None, params: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        endpoint = ENDPOINTS[name]
        settings = await self.get_settings()
        url = self._url(settings, endpoint, job_id)
        async for attempt in self._retrying(settings, endpoint, tenacity.AsyncRetrying):
            with attempt:
                return await self._send(endpoint, url, params, settings.timeout)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, endpoint: Endpoint, url: str, params: Any, timeout: float) -> tuple[int, dict[str, Any]]:
        client = await self.get_client()
        try:
            response = await client.request(endpoint.method, url, params=params)
        except httpx.ConnectTimeout:
            raise _connect_timeout(url, timeout) from None
        except httpx.TimeoutException:
            raise _no_response(url, timeout) from None
        except httpx.ConnectError as err:
            raise (_tls_failure(url, str(err)) if _has_ssl_cause(err) else _unreachable(url)) from None
        except httpx.TransportError as err:
            raise _broken(url, f"{type(err).__name__}: {err}") from None
        return response.status_code, parse_response(response.status_code, response.text, method=endpoint.method, url=url)

    async def health(self) -> dict[str, Any]:
        return (await self._request("health"))[1]

    async def get_job(self, job_id: str) -> ScriptRunnerJob:
        status, data = await self._request("job", job_id=job_id)
        return ScriptRunnerHook._job(data, status, "GET", f"/jobs/{job_id}")

    async def cancel_job(self, job_id: str) -> ScriptRunnerJob:
        status, data = await self._request("cancel", job_id=job_id)
        return ScriptRunnerHook._job(data, status, "POST", f"/jobs/{job_id}/cancel")

    async def get_log_page(self, job_id: str, stream: str = "stdout", offset: int = 0, limit: int | None = None) -> LogPage:
        status, data = await self._request("logs", job_id=job_id, params=_log_params(stream, offset, limit))
        return _log_page(data, status, job_id)

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
            await self._request("health")
        except Exception as err:  # noqa: BLE001
            return False, describe_connection_failure(err)
        return True, "script-runner is healthy"


# --------------------------------------------------------------------------------------------
# Helpers


def describe_connection_failure(err: BaseException) -> str:
    """A message for the UI's "Test" button that says what is wrong."""
    if isinstance(err, ScriptRunnerTLSError):
        return f"TLS failure talking to {err.url}: {err.reason}"
    if isinstance(err, ScriptRunnerTimeoutError):
        return f"Timed out talking to {err.url}: {err.reason}"
    if isinstance(err, ScriptRunnerConnectionError):
        return f"Could not connect to {err.url}: {err.reason}"
    if isinstance(err, ScriptRunnerAuthError):
        return f"Authentication rejected (HTTP {err.status_code}) at {err.url}: check Password (API token) or Login/Password"
    if isinstance(err, ScriptRunnerResponseError):
        return f"Not a script-runner at {err.url} (HTTP {err.status_code}): {err.message}"
    if isinstance(err, ScriptRunnerError):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _log_params(stream: str, offset: int, limit: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {"stream": validate_stream(stream), "offset": _validate_non_negative("offset", offset)}
    if _validate_limit(limit) is not None:
        params["limit"] = limit
    return params


def _log_page(data: dict[str, Any], status: int, job_id: str) -> LogPage:
    try:
        return LogPage.from_api(data)
    except ValueError as err:
        raise _malformed(err, status, method="GET", url=f"/jobs/{job_id}/logs", body=data) from None


MAY_HAVE_STARTED = (
    "The request may have reached the server and started the script; it was not sent again, so that "
    "the script never runs twice: check the server before re-running the task"
)


def _not_sent_again(err: ScriptRunnerConnectionError) -> ScriptRunnerConnectionError:
    """The error of a cut request that starts a script, saying that it may have run ("Cannot reach" alone invites a re-run)."""
    return type(err)(err.url, f"{err.reason}. {MAY_HAVE_STARTED}", may_have_reached_server=True)


def _never_sent(err: requests.exceptions.ConnectionError) -> bool:
    """Whether a requests ConnectionError happened before the request could leave (refused, DNS, connect timeout)."""
    cause = err.args[0] if err.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


# Transport failures, worded and classified once for both hooks. ``may_have_reached_server`` is
# False only where the request certainly never left: only then may POST /run be sent again.


def _unreachable(url: str) -> ScriptRunnerConnectionError:
    reason = "connection refused or host not found: is script-runner running there, and are Host and Port right?"
    return ScriptRunnerConnectionError(url, reason, may_have_reached_server=False)


def _tls_failure(url: str, detail: str) -> ScriptRunnerTLSError:
    return ScriptRunnerTLSError(url, f"TLS failure ({detail}): check verify_ssl / ca_bundle", may_have_reached_server=False)


def _connect_timeout(url: str, timeout: Any) -> ScriptRunnerTimeoutError:
    reason = f"connect timed out after {_timeout_text(timeout)}: is the host reachable?"
    return ScriptRunnerTimeoutError(url, reason, may_have_reached_server=False)


def _no_response(url: str, timeout: Any) -> ScriptRunnerTimeoutError:
    reason = f"no response within {_timeout_text(timeout)} (raise the connection's timeout extra if the server is slow)"
    return ScriptRunnerTimeoutError(url, reason, may_have_reached_server=True)


def _broken(url: str, detail: str) -> ScriptRunnerConnectionError:
    return ScriptRunnerConnectionError(url, f"connection broken during the request ({detail})", may_have_reached_server=True)


def _root_message(err: BaseException) -> str:
    cause = err.args[0] if err.args else err
    reason = getattr(cause, "reason", cause)
    return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)


def _timeout_text(timeout: Any) -> str:
    if isinstance(timeout, tuple):
        timeout = next((t for t in timeout if t is not None), None)
    return f"{timeout:g} s" if isinstance(timeout, (int, float)) else "the timeout"


def _has_ssl_cause(err: BaseException) -> bool:
    seen = err
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(err) or "CERTIFICATE" in str(err).upper()


@functools.lru_cache(maxsize=8)
def _httpx_verify(verify: bool | str) -> Any:
    """
    One TLS context per setting for the whole process, shared by every async client.

    Building one loads the CA bundle: ~10-40 ms of CPU and ~1 MB each, which httpx would
    otherwise pay for every trigger's client (1,000 triggers: most of a minute, and a GiB).
    """
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context() if verify else False


async def _aget_connection(hook: BaseHook, conn_id: str) -> Any:
    aget = getattr(type(hook), "aget_connection", None)
    if aget is not None:  # Airflow 3.2+
        return await aget(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(hook.get_connection)(conn_id)
