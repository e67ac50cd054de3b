"""
The errors of the script-runner client, and the one place transport failures are worded.

Everything derives from :class:`ScriptRunnerError`, itself an ``AirflowException``, so a task
fails with a clear message; callers branch on fields (``status_code``, ``error_code``,
``may_have_reached_server``), never on message text. Every error names the absolute URL of the
request that failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_scriptrunner.client.api import Request
    from airflow_provider_scriptrunner.client.models import ScriptRunnerJob

#: The server's error code for an unknown job id.
JOB_NOT_FOUND = "JOB_NOT_FOUND"

#: Added to the error of a request that starts a script and may have reached the server.
MAY_HAVE_STARTED = (
    "The request may have reached the server and started the script; it was not sent again, so that "
    "the script never runs twice: check the server before re-running the task"
)


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
    :param url: absolute URL of the request.
    :param hint: a sentence added to the message (what to check next).
    """

    def __init__(
        self,
        status_code: int,
        error_code: str | None,
        message: str,
        *,
        method: str = "",
        url: str = "",
        hint: str = "",
    ) -> None:
        # AirflowException's own status_code is an HTTPStatus for the API server; ours is the server's answer.
        self.status_code = status_code  # type: ignore[assignment]
        self.error_code = error_code
        self.message = message
        self.method = method
        self.url = url
        code = f" {error_code}" if error_code else ""
        text = f"script-runner answered {status_code}{code} to {method} {url}: {message}"
        super().__init__(f"{text}. {hint}" if hint else text)


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

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        method: str = "",
        url: str = "",
        body: str = "",
        hint: str = "",
    ) -> None:
        self.body_excerpt = body[:200]
        super().__init__(status_code, None, message, method=method, url=url, hint=hint)


class ScriptRunnerJobError(ScriptRunnerError):
    """
    A job ended in a state that fails the task (failed, timed_out, canceled, lost).

    :param reason: why the task fails, in words.
    :param job: the final job.
    """

    def __init__(self, reason: str, job: ScriptRunnerJob | None = None) -> None:
        self.reason = reason
        self.job = job
        super().__init__(reason)


class ScriptRunnerOutputError(ScriptRunnerJobError):
    """The job succeeded, but its output could not be turned into the task's result (``output_processor`` raised)."""


# -- transport failures: worded once for every HTTP library ---------------------------------------
# ``may_have_reached_server`` is False only where the request certainly never left: only then may a
# request that starts a script be sent again. When it may have left, the error says so.


def _failure(
    kind: type[ScriptRunnerConnectionError], request: Request, reason: str, *, reached: bool
) -> ScriptRunnerConnectionError:
    if reached and request.endpoint.starts_work:
        reason = f"{reason}. {MAY_HAVE_STARTED}"
    return kind(request.url, reason, may_have_reached_server=reached)


def unreachable(request: Request, err: BaseException | None = None) -> ScriptRunnerConnectionError:
    reason = (
        "connection refused or host not found: is script-runner running there, and are Host and Port right?"
    )
    return _failure(ScriptRunnerConnectionError, request, reason, reached=False)


def tls_failure(request: Request, err: BaseException) -> ScriptRunnerConnectionError:
    reason = f"TLS failure ({root_message(err)}): check verify_ssl / ca_bundle"
    return _failure(ScriptRunnerTLSError, request, reason, reached=False)


def connect_failure(request: Request, err: BaseException) -> ScriptRunnerConnectionError:
    """A connection that could not be made: a TLS failure when SSL caused it, else unreachable."""
    return tls_failure(request, err) if _has_ssl_cause(err) else unreachable(request)


def connect_timeout(request: Request, err: BaseException | None = None) -> ScriptRunnerConnectionError:
    reason = f"connect timed out after {_seconds(request.timeout)}: is the host reachable?"
    return _failure(ScriptRunnerTimeoutError, request, reason, reached=False)


def no_response(request: Request, err: BaseException | None = None) -> ScriptRunnerConnectionError:
    reason = f"no response within {_seconds(request.timeout)} (raise the connection's timeout extra if the server is slow)"
    return _failure(ScriptRunnerTimeoutError, request, reason, reached=True)


def broken(request: Request, detail: str) -> ScriptRunnerConnectionError:
    reason = f"connection broken during the request ({detail})"
    return _failure(ScriptRunnerConnectionError, request, reason, reached=True)


def broken_off(request: Request, err: BaseException) -> ScriptRunnerConnectionError:
    """The response arrived in part (a body cut off)."""
    reason = f"response broken off ({root_message(err)})"
    return _failure(ScriptRunnerConnectionError, request, reason, reached=True)


def named(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def root_message(err: BaseException) -> str:
    """The innermost reason of a wrapped library error (urllib3's inside requests')."""
    # Only an exception is unwrapped: aiohttp's first argument is its connection key, whose text
    # holds the proxy URL with its credentials.
    cause = err.args[0] if err.args and isinstance(err.args[0], BaseException) else err
    reason = getattr(cause, "reason", cause)
    if reason is err or not isinstance(reason, BaseException):
        return str(reason)
    return f"{type(reason).__name__}: {reason}"


def _seconds(timeout: Any) -> str:
    if isinstance(timeout, tuple):
        timeout = next((t for t in timeout if t is not None), None)
    return f"{timeout:g} s" if isinstance(timeout, (int, float)) else "the timeout"


def _has_ssl_cause(err: BaseException) -> bool:
    import ssl

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(err) or "CERTIFICATE" in str(err).upper()


#: An HTTP library's exceptions and the provider's error each becomes, first match wins.
ErrorMap = tuple[
    tuple[
        "type[BaseException] | tuple[type[BaseException], ...]",
        "Callable[[Request, BaseException], ScriptRunnerConnectionError]",
    ],
    ...,
]


def translate(error_map: ErrorMap, request: Request, err: BaseException) -> BaseException:
    """The provider's error for a library's exception, by ``error_map``; ``err`` itself when none matches."""
    for kinds, build in error_map:
        if isinstance(err, kinds):
            return build(request, err)
    return err
