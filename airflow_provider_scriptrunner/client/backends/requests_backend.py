"""The sync hook's HTTP library: requests, one session per hook."""

from __future__ import annotations

from typing import TYPE_CHECKING

import requests
import urllib3.exceptions

from airflow_provider_scriptrunner.client import errors

if TYPE_CHECKING:
    from airflow_provider_scriptrunner.client.api import Request
    from airflow_provider_scriptrunner.client.settings import ConnectionSettings


def _connection_error(request: Request, err: BaseException) -> errors.ScriptRunnerConnectionError:
    # Refused, DNS failure or connect timeout: the request never left. Anything else may have.
    cause = err.args[0] if err.args else None
    reason = getattr(cause, "reason", cause)
    never_sent = isinstance(
        reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    )
    return errors.unreachable(request) if never_sent else errors.broken(request, errors.root_message(err))


ERRORS: errors.ErrorMap = (
    (requests.exceptions.SSLError, errors.tls_failure),
    (requests.exceptions.ConnectTimeout, errors.connect_timeout),
    (requests.exceptions.ReadTimeout, errors.no_response),
    (requests.exceptions.ConnectionError, _connection_error),
    # ChunkedEncodingError and friends: the response body was cut off.
    (requests.exceptions.RequestException, errors.broken_off),
)


class RequestsBackend:
    """Sends with a requests session that carries the connection's headers and TLS setting."""

    name = "requests"

    def __init__(self, settings: ConnectionSettings) -> None:
        self.verify = settings.verify
        self.session = requests.Session()
        self.session.headers.update(settings.request_headers())
        self.session.verify = settings.verify

    def send(self, request: Request) -> tuple[int, str]:
        try:
            response = self.session.request(
                request.method,
                request.url,
                params=request.params,
                json=request.body,
                timeout=request.timeout,
                # Per request too: requests lets REQUESTS_CA_BUNDLE override the session's setting.
                verify=self.verify,
            )
            return response.status_code, response.text
        except requests.exceptions.RequestException as err:
            raise errors.translate(ERRORS, request, err) from None

    def close(self) -> None:
        self.session.close()
