"""
The script-runner HTTP API: its routes, the one retry rule, and how an answer becomes a model or
a typed error. Both hooks send every request through here, whatever HTTP library carries it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import tenacity

from airflow_provider_scriptrunner.client import validation
from airflow_provider_scriptrunner.client.conn_fields import TRANSIENT_STATUS_CODES
from airflow_provider_scriptrunner.client.errors import (
    JOB_NOT_FOUND,
    MAY_HAVE_STARTED,
    ScriptRunnerApiError,
    ScriptRunnerAuthError,
    ScriptRunnerConnectionError,
    ScriptRunnerJobNotFoundError,
    ScriptRunnerResponseError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

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

    def url(self, base_url: str, job_id: str | None = None) -> str:
        """The absolute URL of this route (``job_id`` fills ``{job_id}``, escaped)."""
        if "{job_id}" not in self.path:
            return base_url + self.path
        return base_url + self.path.format(job_id=quote(validation.validate_job_id(job_id), safe=""))


HEALTH = Endpoint("GET", "/healthz")
RUN = Endpoint("POST", "/run", starts_work=True)
JOB = Endpoint("GET", "/jobs/{job_id}")
LOGS = Endpoint("GET", "/jobs/{job_id}/logs")
CANCEL = Endpoint("POST", "/jobs/{job_id}/cancel")


@dataclass(frozen=True)
class Request:
    """
    One call of an endpoint, ready to send: what an HTTP backend needs, and what an error names.

    :param timeout: seconds, or a ``(connect, read)`` pair where a read of None waits for ever.
    """

    endpoint: Endpoint
    url: str
    timeout: float | tuple[float, float | None]
    params: dict[str, Any] | None = None
    body: dict[str, Any] | None = field(default=None)

    @property
    def method(self) -> str:
        return self.endpoint.method


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


def parse(request: Request, status: int, text: str, into: Callable[[dict[str, Any]], T]) -> T:
    """
    The answer to ``request`` as a model (``into`` builds it from the JSON object), or the error.

    :raises ScriptRunnerApiError: (or a subclass) for an error status or a body that is not the
        JSON object the API promises, naming the request's method and absolute URL.
    """
    body = _body(request, status, text)
    try:
        return into(body)
    except ValueError as err:
        raise ScriptRunnerResponseError(
            status, f"malformed response: {err}", method=request.method, url=request.url, body=text
        ) from None


def _body(request: Request, status: int, text: str) -> dict[str, Any]:
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    failed = status >= 400 or (isinstance(body, dict) and body.get("ok") is False)
    where = {"method": request.method, "url": request.url}
    # A 5xx (or a proxy's error page) may come after the script started.
    hint = MAY_HAVE_STARTED if failed and request.endpoint.starts_work and status >= 500 else ""
    error = body.get("error") if isinstance(body, dict) else None
    if failed and isinstance(error, dict):
        code, message = error.get("code"), str(error.get("message") or "")
        kind = (
            ScriptRunnerAuthError
            if status in (401, 403)
            else ScriptRunnerJobNotFoundError
            if code == JOB_NOT_FOUND
            else ScriptRunnerApiError
        )
        raise kind(status, code, message, hint=hint, **where)
    if failed and status in (401, 403):
        raise ScriptRunnerAuthError(
            status,
            None,
            "authentication rejected: check the connection's Password (API token) or Login/Password",
            **where,
        )
    if failed and status == 404:
        message = "this URL is not a script-runner API (404 without a script-runner error body): check Host, Port and the path prefix"
        raise ScriptRunnerResponseError(status, message, body=text, **where)
    if failed:
        raise ScriptRunnerResponseError(
            status, "error response that is not script-runner JSON", body=text, hint=hint, **where
        )
    if not isinstance(body, dict):
        message = "response body is not a JSON object" if body is None else "response JSON is not an object"
        raise ScriptRunnerResponseError(status, message, body=text, **where)
    return body


def submitted_job_id(body: dict[str, Any]) -> str:
    """The job id in the answer to an async run."""
    job_id = body.get("jobId")
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("no jobId in the answer to an async run")
    return job_id


def run_body(script_id: Any, args: Any, mode: str) -> dict[str, Any]:
    """The body of POST /run, checked before it is sent."""
    return {
        "scriptId": validation.validate_script_id(script_id),
        "args": validation.validate_args(args),
        "mode": mode,
    }
