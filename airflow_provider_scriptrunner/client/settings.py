"""
Connection settings: everything a request needs, derived once from an Airflow connection of type
``scriptrunner`` (base URL, auth, timeout, TLS, headers, retries).
"""

from __future__ import annotations

import base64
import functools
import json
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_scriptrunner import __version__
from airflow_provider_scriptrunner.client.conn_fields import (
    CONN_TYPE,
    DEFAULT_PORT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
)
from airflow_provider_scriptrunner.client.errors import ScriptRunnerConfigError

#: Sent with every request.
USER_AGENT = f"airflow-provider-scriptrunner/{__version__}"


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
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **self.headers}
        if self.auth_header:
            headers["Authorization"] = self.auth_header
        return headers

    def key(self) -> tuple[Any, ...]:
        """Everything that goes into an HTTP client: settings with equal keys can share one."""
        return (
            self.base_url,
            self.timeout,
            self.verify,
            tuple(sorted(self.headers.items())),
            self.auth_header,
        )


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
    plain = {k[len(prefix) :]: v for k, v in extra.items() if k.startswith(prefix) and v not in (None, "")}
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
        raise ScriptRunnerConfigError(
            f'connection extra "headers" must be a JSON object, got {type(headers).__name__}'
        )
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


@functools.lru_cache(maxsize=8)
def ssl_context(verify: bool | str) -> ssl.SSLContext | bool:
    """
    The TLS setting of an async client: one context per setting for the whole process.

    Building a context loads the CA bundle (tens of ms of CPU and about 1 MB each), so every
    client shares the one built here. ``verify`` is a CA bundle path, True (the CAs requests and
    httpx trust, from certifi) or False (no verification, returned as False). Call it from a
    worker thread, never on an event loop.
    """
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    if not verify:
        return False
    import httpx

    return httpx.create_ssl_context()
