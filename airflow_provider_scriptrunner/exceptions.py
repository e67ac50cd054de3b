"""Exceptions raised by the script-runner provider.

Everything derives from :class:`ScriptRunnerError`, itself an ``AirflowException``, so a task
fails with a clear message, and callers branch on attributes (``status_code``, ``error_code``,
``may_have_reached_server``) rather than on message text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk.exceptions import AirflowException

if TYPE_CHECKING:
    from airflow_provider_scriptrunner.models import ScriptRunnerJob

#: The server's error code for an unknown job id (the one code the provider branches on).
JOB_NOT_FOUND = "JOB_NOT_FOUND"


class ScriptRunnerError(AirflowException):
    """Base class of every error raised by this provider."""


class ScriptRunnerConfigError(ScriptRunnerError, ValueError):
    """The Airflow connection (or an operator argument) is not usable as given."""


class ScriptRunnerConnectionError(ScriptRunnerError):
    """
    The server could not be reached, or the exchange broke off before a response arrived.

    :param url: the URL that was requested.
    :param reason: what went wrong, in words.
    :param may_have_reached_server: False only when the request certainly never left this
        machine (connection refused, DNS failure, connect timeout): only then is it safe to
        repeat a request that starts a script.
    """

    def __init__(self, url: str, reason: str, *, may_have_reached_server: bool) -> None:
        self.url = url
        self.reason = reason
        self.may_have_reached_server = may_have_reached_server
        super().__init__(f"Cannot reach script-runner at {url}: {reason}")


class ScriptRunnerTimeoutError(ScriptRunnerConnectionError):
    """The request timed out (connect or read)."""


class ScriptRunnerTLSError(ScriptRunnerConnectionError):
    """The TLS handshake failed (certificate not trusted, wrong host name, not TLS at all)."""


class ScriptRunnerApiError(ScriptRunnerError):
    """
    The server answered with an error status.

    :param status_code: HTTP status code.
    :param error_code: the server's error code (``SCRIPT_NOT_FOUND``, ``INVALID_ARGS``,
        ``JOB_NOT_FOUND``, ``NOT_FOUND``, ``INTERNAL_ERROR``), or None when the body carried none
        (for example an error page from a proxy).
    :param message: the server's message, or a description of the body.
    :param method: HTTP method of the request.
    :param url: URL of the request.
    """

    def __init__(
        self,
        status_code: int,
        error_code: str | None,
        message: str,
        *,
        method: str = "",
        url: str = "",
    ) -> None:
        # AirflowException's own status_code is an HTTPStatus for the API server; ours is the server's answer.
        self.status_code = status_code  # type: ignore[assignment]
        self.error_code = error_code
        self.message = message
        self.method = method
        self.url = url
        code = f" {error_code}" if error_code else ""
        super().__init__(f"script-runner answered {status_code}{code} to {method} {url}: {message}")


class ScriptRunnerAuthError(ScriptRunnerApiError):
    """401/403: credentials missing or rejected (by the proxy in front of the server)."""


class ScriptRunnerJobNotFoundError(ScriptRunnerApiError):
    """404 JOB_NOT_FOUND: the server does not know this job id."""


class ScriptRunnerResponseError(ScriptRunnerApiError):
    """
    The server answered, but the body is not the JSON the API promises.

    Typical causes: an HTML error page from a reverse proxy, a truncated body, or a URL that
    does not point at script-runner at all. ``error_code`` is None; ``body_excerpt`` holds the
    first 200 characters of what arrived.
    """

    def __init__(self, status_code: int, message: str, *, method: str = "", url: str = "", body: str = ""):
        self.body_excerpt = body[:200]
        super().__init__(status_code, None, message, method=method, url=url)


class ScriptRunnerJobError(ScriptRunnerError):
    """
    A job ended in a state that fails the task (failed, timed_out, canceled, lost).

    :param job: the final job.
    :param reason: why the task fails, in words.
    """

    def __init__(self, reason: str, job: ScriptRunnerJob | None = None) -> None:
        self.reason = reason
        self.job = job
        super().__init__(reason)
