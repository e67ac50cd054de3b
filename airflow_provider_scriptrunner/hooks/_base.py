"""What the sync and async hooks share: the connection, URL building, the retry policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseHook

from airflow_provider_scriptrunner import transport, validation
from airflow_provider_scriptrunner.constants import CONN_TYPE, DEFAULT_CONN_ID
from airflow_provider_scriptrunner.models import ScriptRunnerJob
from airflow_provider_scriptrunner.settings import ConnectionSettings
from airflow_provider_scriptrunner.transport import JOB, Endpoint

if TYPE_CHECKING:
    import tenacity


class _ScriptRunnerHookBase(BaseHook):
    """What the sync and async hooks share: connection, URL building, connection form."""

    conn_name_attr = "scriptrunner_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Script Runner"

    def __init__(
        self, scriptrunner_conn_id: str = DEFAULT_CONN_ID, *, retries: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.scriptrunner_conn_id = validation.conn_id(scriptrunner_conn_id)
        # Attempts after the first, or None for the connection's ``retries`` extra.
        self._retries_override = validation.optional_integer("retries", retries, minimum=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scriptrunner_conn_id={self.scriptrunner_conn_id!r})"

    def _settings_from(self, conn: Any) -> ConnectionSettings:
        if conn.conn_type and conn.conn_type != CONN_TYPE:
            self.log.warning(
                "Connection %r has type %r, expected %r", self.scriptrunner_conn_id, conn.conn_type, CONN_TYPE
            )
        return ConnectionSettings.from_connection(conn)

    def _url(self, settings: ConnectionSettings, endpoint: Endpoint, job_id: str | None) -> str:
        path = endpoint.path
        if "{job_id}" in path:
            path = path.format(job_id=quote(validation.validate_job_id(job_id), safe=""))
        return settings.base_url + path

    def _attempts(self, settings: ConnectionSettings) -> int:
        return (self._retries_override if self._retries_override is not None else settings.retries) + 1

    def _retrying(self, settings: ConnectionSettings, endpoint: Endpoint, kind: type) -> Any:
        # One retry controller per endpoint and hook, used again for every request (tenacity's are
        # reusable): building one per request cost CPU and left reference cycles to the collector.
        key = (endpoint, kind, self._attempts(settings))
        cache = self.__dict__.setdefault("_retrying_cache", {})
        if key not in cache:
            cache[key] = transport.retrying(key[2], endpoint, kind, self._log_retry)
        return cache[key]

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
        return self._url(ConnectionSettings.from_connection(conn), JOB, job_id)


def job_from(data: dict[str, Any], status: int, method: str, url: str) -> ScriptRunnerJob:
    """The job object of an answer, or the malformed-response error naming the request."""
    try:
        return ScriptRunnerJob.from_api(data)
    except ValueError as err:
        raise transport.malformed(err, status, method=method, url=url, body=data) from None
