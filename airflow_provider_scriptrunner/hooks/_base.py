"""What the sync and async hooks share: the Airflow connection, the retry policy, the connection form."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_scriptrunner.client import api, validation
from airflow_provider_scriptrunner.client.conn_fields import CONN_FIELDS, CONN_TYPE
from airflow_provider_scriptrunner.client.errors import (
    ScriptRunnerAuthError,
    ScriptRunnerConnectionError,
    ScriptRunnerError,
    ScriptRunnerResponseError,
    ScriptRunnerTimeoutError,
    ScriptRunnerTLSError,
)
from airflow_provider_scriptrunner.client.settings import ConnectionSettings

if TYPE_CHECKING:
    import tenacity

DEFAULT_CONN_ID = "scriptrunner_default"


class ScriptRunnerHookBase(BaseHook):
    """
    The connection and retry policy of both hooks.

    :param scriptrunner_conn_id: Airflow connection of type ``scriptrunner``.
    :param retries: attempts after the first for transient errors; overrides the connection's
        ``retries`` extra.
    """

    conn_name_attr = "scriptrunner_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Script Runner"

    def __init__(
        self, scriptrunner_conn_id: str = DEFAULT_CONN_ID, *, retries: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.scriptrunner_conn_id = validation.conn_id(scriptrunner_conn_id)
        self._retries_override = validation.optional_integer("retries", retries, minimum=0)
        self._retrying_cache: dict[tuple[Any, ...], Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scriptrunner_conn_id={self.scriptrunner_conn_id!r})"

    def _settings_from(self, conn: Any) -> ConnectionSettings:
        if conn.conn_type and conn.conn_type != CONN_TYPE:
            self.log.warning(
                "Connection %r has type %r, expected %r", self.scriptrunner_conn_id, conn.conn_type, CONN_TYPE
            )
        return ConnectionSettings.from_connection(conn)

    def _attempts(self, settings: ConnectionSettings) -> int:
        return (self._retries_override if self._retries_override is not None else settings.retries) + 1

    def _retrying(self, settings: ConnectionSettings, endpoint: api.Endpoint, kind: type) -> Any:
        # One retry controller per endpoint, reused for every request (tenacity's are reusable).
        key = (endpoint, kind, self._attempts(settings))
        if key not in self._retrying_cache:
            self._retrying_cache[key] = api.retrying(key[2], endpoint, kind, self._log_retry)
        return self._retrying_cache[key]

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        self.log.warning(
            "script-runner request failed (attempt %d), retrying in %.1f s: %s",
            state.attempt_number,
            state.next_action.sleep if state.next_action else 0,
            error,
        )


def connection_form_widgets() -> dict[str, Any]:
    """The extra fields of the connection form for Airflow 3.1, built from :data:`CONN_FIELDS`."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import NumberRange, Optional

    widgets: dict[str, Any] = {}
    for name, spec in CONN_FIELDS.items():
        label, schema = lazy_gettext(spec["label"]), spec["schema"]
        if "boolean" in schema["type"]:
            widgets[name] = BooleanField(label, default=schema.get("default"))
        elif "integer" in schema["type"]:
            validators = [Optional(), NumberRange(min=schema.get("minimum"))]
            widgets[name] = IntegerField(
                label, validators=validators, widget=BS3TextFieldWidget(), default=schema.get("default")
            )
        else:  # numbers are entered as text and parsed like any other extra
            widgets[name] = StringField(label, widget=BS3TextFieldWidget())
    return widgets


def describe_connection_failure(err: BaseException) -> str:
    """A message for the connection test (UI button, CLI) that says what is wrong."""
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
