"""
The transport shared by both hooks: the endpoints, the retry rules, and how answers and
failures become typed errors. Transport failures are worded here once, for the sync (requests)
and the async (aiohttp or httpx, :mod:`~airflow_provider_scriptrunner.async_clients`) hook alike.
"""

from __future__ import annotations

import functools
import json
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import tenacity
import urllib3.exceptions

from airflow_provider_scriptrunner.constants import TRANSIENT_STATUS_CODES
from airflow_provider_scriptrunner.exceptions import (
    JOB_NOT_FOUND,
    ScriptRunnerApiError,
    ScriptRunnerAuthError,
    ScriptRunnerConnectionError,
    ScriptRunnerError,
    ScriptRunnerJobNotFoundError,
    ScriptRunnerResponseError,
    ScriptRunnerTimeoutError,
    ScriptRunnerTLSError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import requests

#: Backoff between attempts: exponential with jitter, capped (module-level so tests can shorten it).
RETRY_WAIT = tenacity.wait_exponential_jitter(multiplier=0.5, max=10, jitter=0.5)


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


#: The routes of the script-runner API.
HEALTH = Endpoint("GET", "/healthz")
RUN = Endpoint("POST", "/run", starts_work=True)
JOB = Endpoint("GET", "/jobs/{job_id}")
LOGS = Endpoint("GET", "/jobs/{job_id}/logs")
CANCEL = Endpoint("POST", "/jobs/{job_id}/cancel")


def is_transient(error: BaseException, endpoint: Endpoint) -> bool:
    """Whether ``error`` is worth another try of ``endpoint``: the one place retry rules live."""
    if isinstance(error, ScriptRunnerConnectionError):
        return not (endpoint.starts_work and error.may_have_reached_server)
    if isinstance(error, ScriptRunnerApiError) and not endpoint.starts_work:
        return error.status_code in TRANSIENT_STATUS_CODES
    return False


def retrying(
    attempts: int, endpoint: Endpoint, kind: type, before_sleep: Callable[[tenacity.RetryCallState], None]
) -> Any:
    """A tenacity ``Retrying``/``AsyncRetrying`` that retries what :func:`is_transient` allows."""
    return kind(
        stop=tenacity.stop_after_attempt(attempts),
        wait=RETRY_WAIT,
        retry=tenacity.retry_if_exception(lambda err: is_transient(err, endpoint)),
        before_sleep=before_sleep,
        reraise=True,
    )


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
        raise ScriptRunnerResponseError(
            status, "error response that is not script-runner JSON", method=method, url=url, body=text
        )
    if not isinstance(body, dict):
        raise ScriptRunnerResponseError(
            status,
            "response body is not a JSON object" if body is None else "response JSON is not an object",
            method=method,
            url=url,
            body=text,
        )
    return body


def malformed(
    error: ValueError, status: int, *, method: str, url: str, body: dict[str, Any]
) -> ScriptRunnerResponseError:
    return ScriptRunnerResponseError(
        status, f"malformed response: {error}", method=method, url=url, body=json.dumps(body)
    )


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


MAY_HAVE_STARTED = (
    "The request may have reached the server and started the script; it was not sent again, so that "
    "the script never runs twice: check the server before re-running the task"
)


def not_sent_again(err: ScriptRunnerConnectionError) -> ScriptRunnerConnectionError:
    """The error of a cut request that starts a script, saying that it may have run ("Cannot reach" alone invites a re-run)."""
    return type(err)(err.url, f"{err.reason}. {MAY_HAVE_STARTED}", may_have_reached_server=True)


def never_sent(err: requests.exceptions.ConnectionError) -> bool:
    """Whether a requests ConnectionError happened before the request could leave (refused, DNS, connect timeout)."""
    cause = err.args[0] if err.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


# Transport failures, worded and classified once for both hooks. ``may_have_reached_server`` is
# False only where the request certainly never left: only then may POST /run be sent again.


def unreachable(url: str) -> ScriptRunnerConnectionError:
    reason = (
        "connection refused or host not found: is script-runner running there, and are Host and Port right?"
    )
    return ScriptRunnerConnectionError(url, reason, may_have_reached_server=False)


def tls_failure(url: str, detail: str) -> ScriptRunnerTLSError:
    return ScriptRunnerTLSError(
        url, f"TLS failure ({detail}): check verify_ssl / ca_bundle", may_have_reached_server=False
    )


def connect_failure(url: str, err: BaseException) -> ScriptRunnerConnectionError:
    """A connection that could not be made: a TLS failure when SSL caused it, else unreachable."""
    return tls_failure(url, str(err)) if has_ssl_cause(err) else unreachable(url)


def connect_timeout(url: str, timeout: Any) -> ScriptRunnerTimeoutError:
    reason = f"connect timed out after {timeout_text(timeout)}: is the host reachable?"
    return ScriptRunnerTimeoutError(url, reason, may_have_reached_server=False)


def no_response(url: str, timeout: Any) -> ScriptRunnerTimeoutError:
    reason = f"no response within {timeout_text(timeout)} (raise the connection's timeout extra if the server is slow)"
    return ScriptRunnerTimeoutError(url, reason, may_have_reached_server=True)


def broken(url: str, detail: str) -> ScriptRunnerConnectionError:
    return ScriptRunnerConnectionError(
        url, f"connection broken during the request ({detail})", may_have_reached_server=True
    )


def root_message(err: BaseException) -> str:
    cause = err.args[0] if err.args else err
    reason = getattr(cause, "reason", cause)
    return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)


def timeout_text(timeout: Any) -> str:
    if isinstance(timeout, tuple):
        timeout = next((t for t in timeout if t is not None), None)
    return f"{timeout:g} s" if isinstance(timeout, (int, float)) else "the timeout"


def has_ssl_cause(err: BaseException) -> bool:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(err) or "CERTIFICATE" in str(err).upper()


@functools.lru_cache(maxsize=8)
def httpx_verify(verify: bool | str) -> Any:
    """
    One TLS context per setting for the whole process, shared by every async client.

    Building one loads the CA bundle: ~10-40 ms of CPU and ~1 MB each, which httpx would
    otherwise pay for every trigger's client (1,000 triggers: most of a minute, and a GiB).
    The result (an ``SSLContext``, or False for no verification) is what both httpx (``verify=``)
    and aiohttp (``ssl=``) take, so both trust the same CAs; the async clients call this in a
    worker thread, never on the event loop.
    """
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context() if verify else False
